"""`speedq status` and `ls` read Redis only: they must not pay for importing modal, RQ, FastAPI,
the worker, pydantic-settings or models they never read; an idle worker must not hold the CLI's
typer (nor rich). Each is a measured cost of every call (issue 11, bench/cli_startup.py and
bench/worker_memory.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Speedq

# argparse: only `speedq worker` parses with it (speedq.worker_cli imports it when parsing).
HEAVY = ("modal", "rq", "fastapi", "speedq.worker", "speedq.producer", "speedq.backends", "pydantic_settings",
         "dotenv", "argparse")
# What `status` does without: it is served before typer is imported and reads over a socket
# (speedq.show, speedq.resp); `ls` goes through typer and redis-py.
STATUS_AVOIDS = ("redis", "typer", "click")
# The schema models `status` validates (the id it is given, the record it reads); every other
# model's validator is built on first use (schemas.rules.Schema), not by importing its module.
STATUS_BUILDS = {"JobRef", "JobRecord"}
PROBE = (
    "import sys, atexit;"
    "built = lambda: sorted(c.__name__ for m in list(sys.modules.values())"
    " if getattr(m, '__name__', '').startswith('speedq.schemas') for c in vars(m).values()"
    " if getattr(c, '__module__', None) == m.__name__ and getattr(c, '__pydantic_complete__', False));"
    f"atexit.register(lambda: print('imported:', *[m for m in {HEAVY + STATUS_AVOIDS!r} if m in sys.modules],"
    " file=sys.stderr));"
    "atexit.register(lambda: print('built:', *built(), file=sys.stderr));"
    "from speedq.entry import main; main(sys.argv[1:])"
)


def _probe(speedq: Speedq, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str], set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=speedq.env, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    imported = lines[-1].split()[1:] if lines and lines[-1].startswith("imported:") else ["?"]
    built = set(lines[-2].split()[1:]) if len(lines) > 1 and lines[-2].startswith("built:") else {"?"}
    return done, imported, built


@pytest.mark.parametrize("command", [["status", "JOB"], ["status", "JOB", "--json"], ["ls"], ["ls", "--json"]])
def test_read_commands_import_nothing_heavy(speedq: Speedq, command: list[str]) -> None:
    job = speedq.run("submit", "--team", "alpha", "--backend", "modal", check=True).stdout.split()[-1]
    args = [job if a == "JOB" else a for a in command]
    done, imported, built = _probe(speedq, *args)
    assert done.returncode == 0, done.stderr
    assert job in done.stdout
    assert [m for m in imported if m not in STATUS_AVOIDS] == []
    if command[0] == "status":
        assert imported == []
        assert built <= STATUS_BUILDS, f"status built models it does not read: {built - STATUS_BUILDS}"


def test_a_worker_holds_no_typer_nor_rich(speedq: Speedq) -> None:
    check = (
        "import sys, atexit;"
        "atexit.register(lambda: print('held:', *sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich'}),"
        " file=sys.stderr));"
        "from speedq.entry import main; main(sys.argv[1:])"
    )
    done = subprocess.run([sys.executable, "-c", check, "worker", "--burst", "--backend", "sim"], env=speedq.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "speedq worker serving sim jobs (burst)" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "held:"
