"""`speedq status` and `ls` read Redis only: they must not pay for importing modal, RQ, FastAPI
or the worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Speedq

HEAVY = ("modal", "rq", "fastapi", "speedq.worker", "speedq.producer", "speedq.backends")
PROBE = (
    "import sys, atexit;"
    f"atexit.register(lambda: print('imported:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr));"
    "from speedq.cli import main; main(sys.argv[1:])"
)


@pytest.mark.parametrize("command", [["status", "JOB"], ["status", "JOB", "--json"], ["ls"], ["ls", "--json"]])
def test_read_commands_import_nothing_heavy(speedq: Speedq, command: list[str]) -> None:
    job = speedq.run("submit", "--team", "alpha", "--backend", "modal", check=True).stdout.split()[-1]
    args = [job if a == "JOB" else a for a in command]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=speedq.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert job in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "imported:"
