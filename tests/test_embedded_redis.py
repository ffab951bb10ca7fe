"""With SPEEDQ_REDIS_URL unset, speedq starts its own redis-server once, reuses it, and keeps
its data in an append-only file that survives the server being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for


@pytest.fixture
def home() -> Iterator[Path]:
    # A short path: the embedded server listens on a unix socket (at most 107 bytes).
    with tempfile.TemporaryDirectory(prefix="sq-") as tmp:
        yield Path(tmp)
        pidfile = Path(tmp) / "redis" / "redis.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def speedq(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPEEDQ_REDIS_URL"}
    env["SPEEDQ_HOME"] = str(home)
    command = [sys.executable, "-m", "speedq", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def server_pid(home: Path) -> int:
    return int((home / "redis" / "redis.pid").read_text())


def test_embedded_redis_starts_once_and_is_reused(home: Path) -> None:
    job = speedq(home, "submit", "--team", "alpha", "--backend", "sim").stdout.split()[-1]
    pid = server_pid(home)

    listed = speedq(home, "ls", "--json")
    again = speedq(home, "status", job)

    assert listed.returncode == 0 and job in listed.stdout
    assert again.returncode == 0 and "queued" in again.stdout
    assert server_pid(home) == pid  # reused, not started again
    assert (home / "redis" / "redis.sock").is_socket()
    assert any((home / "redis").glob("appendonly*"))  # append-only persistence is on


def test_embedded_redis_killed_comes_back_with_its_jobs(home: Path) -> None:
    job = speedq(home, "submit", "--team", "alpha", "--backend", "sim").stdout.split()[-1]
    pid = server_pid(home)
    wait_for(lambda: any(p.stat().st_size for p in (home / "redis").rglob("*.aof")), timeout=5, what="the AOF write")

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             timeout=10, what="the server to die")
    status = speedq(home, "status", job, "--json")

    assert status.returncode == 0, status.stderr
    assert f'"id":"{job}"' in status.stdout
    assert server_pid(home) != pid
