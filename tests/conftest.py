"""Real parts for every test: a redis-server of the test's own on a free port, `speedq`
commands and workers as real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from speedq import settings
from speedq.connection import redis_server_binary
from speedq.gpu import proctree
from speedq.keys import Keys

REDIS_SERVER = redis_server_binary()  # from PATH, or the one the `embedded` extra compiled
# Set by .ci/run, which installs a CPU torch and has nanochat beside the clone: there a skipped
# real-nanochat test is a missing install step, not a machine without torch, so it fails.
REQUIRE_REAL_ENV = "SPEEDQ_REQUIRE_REAL"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.get_closest_marker("real") and os.environ.get(REQUIRE_REAL_ENV) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_REAL_ENV}=1, yet this real-nanochat test skipped: {reason}"


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """speedq reads its settings once per process; a test that changes a SPEEDQ_* variable through
    monkeypatch gets them read again, and the next test starts from the environment as it is."""
    for name in ("setenv", "delenv"):
        original = getattr(monkeypatch, name)

        def changed(*args: object, _original: Callable[..., None] = original, **kwargs: object) -> None:
            _original(*args, **kwargs)
            settings.get.cache_clear()

        monkeypatch.setattr(monkeypatch, name, changed)
    settings.get.cache_clear()
    yield
    settings.get.cache_clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.1, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def as_written_by_a_newer_speedq(conn: redis.Redis, job_id: str) -> None:
    """Give the stored record a spec field this speedq does not know, as a newer version writing
    it during a rolling upgrade would: this version cannot parse it."""
    raw = json.loads(conn.get(Keys.job(job_id)) or b"")
    raw["spec"]["field_from_a_newer_version"] = 1
    conn.set(Keys.job(job_id), json.dumps(raw))


@dataclass
class RedisServer:
    """A redis-server with append-only persistence that a test may kill and start again."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    launcher: list[str] = field(default_factory=list)  # e.g. `ip netns exec <ns>`: another host's

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [*self.launcher, REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "no"],  # no password, and a test's server may be on another (netns) host
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), timeout=10, what="redis-server to answer")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, down_for: float = 0.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for one test alone, for tests that kill it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@dataclass
class Speedq:
    """Runs `speedq` the way a user does, against the test's Redis and state directory."""

    env: dict[str, str]
    home: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "speedq", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"speedq {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def submit(self, *args: str, preflight: bool = False) -> str:
        """Submit on the sim. The suite's jobs test the full run itself, so without its preflight
        unless asked (tests/test_preflight.py tests the preflight, the default for users)."""
        flags = () if preflight else ("--no-preflight",)
        return self.run("submit", "--backend", "sim", *flags, *args, check=True).stdout.strip().splitlines()[-1]

    def status(self, job_id: str) -> dict:
        return json.loads(self.run("status", job_id, "--json", check=True).stdout)

    def wait_state(self, job_id: str, *states: str, timeout: float = 60) -> dict:
        found: dict = {}

        def reached() -> bool:
            found.update(self.status(job_id))
            return found["state"] in states

        try:
            wait_for(reached, timeout=timeout, every=0.2, what=f"{job_id} to reach {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last record: {json.dumps(found)[:3000]}") from None
        return found

    def start_worker(
        self, *args: str, env: dict[str, str] | None = None, backend: str | None = "sim"
    ) -> subprocess.Popen:
        flags = ["--backend", backend] if backend else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "speedq", "worker", *flags, *args],
            env={**self.env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(self.home / f"worker-{len(self.workers)}.log", "w"),
            start_new_session=True,  # so a test can kill it with its work horse, as a crash would
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker and its RQ work horse (the runner it started lives on, as on Modal)."""
        for child in children_of(proc.pid):
            os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc)  # its children too: the work horse and RQ's scheduler
        kill_runners_under(self.home)


def children_of(pid: int) -> list[int]:
    return proctree.children_of(pid)


def kill_runners_under(home: Path) -> None:
    """Runners live in their own sessions (they outlive workers); end the ones this test made."""
    marker = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"speedq.gpu.runner" in cmdline:
            try:
                os.killpg(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    # Their training runs in sessions of its own (as under torchrun): found by the run-dir mark.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if proctree.environ_of(int(entry.name)).get(proctree.MARK_ENV, "").startswith(str(home)):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def speedq(redis_server: RedisServer, tmp_path: Path) -> Iterator[Speedq]:
    redis_server.client().flushall()
    sq = make_speedq(redis_server, tmp_path)
    yield sq
    sq.stop_all()


@pytest.fixture
def speedq_own_redis(own_redis: RedisServer, tmp_path: Path) -> Iterator[Speedq]:
    """For tests that kill and restart Redis under running workers."""
    sq = make_speedq(own_redis, tmp_path)
    yield sq
    sq.stop_all()


# For the tests of a hung run: the stall clock starts at the launch and is reset by each stage and
# step, so it must outlast a loaded machine's start-up gaps (runner, torchrun, first step): about
# 2 s in CI runs of test_faults, so a 2 s bound could end a healthy start-up as stalled.
STALL_TIMEOUT_S = "8"


def make_speedq(redis_server: RedisServer, tmp_path: Path) -> Speedq:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "SPEEDQ_REDIS_URL": redis_server.url,
        "SPEEDQ_HOME": str(home),
        "SPEEDQ_POLL_INTERVAL": "0.2",
        "SPEEDQ_RETRY_BACKOFF": "0.2",
        "SPEEDQ_HEARTBEAT_TTL": "3",
        "SPEEDQ_REAP_INTERVAL": "2",
        "SPEEDQ_LOG_LEVEL": "WARNING",
    }
    env.pop("SPEEDQ_SIM_FAULTS", None)
    return Speedq(env=env, home=home)
