"""`python -m speedq`: the console script, for where it is not on PATH (and for the tests, which
run what a user runs)."""

from speedq.entry import main

main()
