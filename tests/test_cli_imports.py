"""`speedq status` and `ls` read Redis only: they must not pay for `import modal`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Speedq

PROBE = (
    "import sys, atexit;"
    "atexit.register(lambda: print('modal imported' if 'modal' in sys.modules else 'modal not imported',"
    " file=sys.stderr));"
    "from speedq.cli import main; main(sys.argv[1:])"
)


@pytest.mark.parametrize("command", [["status", "JOB"], ["status", "JOB", "--json"], ["ls"], ["ls", "--json"]])
def test_read_commands_do_not_import_modal(speedq: Speedq, command: list[str]) -> None:
    job = speedq.run("submit", "--team", "alpha", "--backend", "modal", check=True).stdout.split()[-1]
    args = [job if a == "JOB" else a for a in command]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=speedq.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert job in done.stdout
    assert "modal not imported" in done.stderr
