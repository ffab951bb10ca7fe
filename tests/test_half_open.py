"""A Redis host that vanishes without closing its connections (a reboot, a pulled cable: the
FIN or RST never arrives) and comes back at the same address with its data. Its clients' sockets
are then half-open: an idle worker waits in a read the server will never answer. Two bounds end
that read, whichever comes first, and the client's retries connect again: the socket timeout RQ
gives a worker's connections (its dequeue wait plus 10 s: 30 s by default, 12 s here) and
redis-py's TCP keepalive (probes after 30 s of silence, which the new host answers with a reset).
The host is a network namespace here, behind a veth pair, so deleting it takes the kernel's
record of every connection with it, as a machine's reboot does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer, make_speedq


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class RedisHost:
    """A redis-server alone on its own network host, which the test can make vanish."""

    def __init__(self, directory: Path) -> None:
        tag = os.getpid() % 100_000  # names and subnet apart from other test processes'
        self.ns, self.near, self.far = f"sq{tag}h", f"sq{tag}a", f"sq{tag}b"
        subnet = f"10.{200 + tag % 50}.{tag % 250}"
        self.here, self.there = f"{subnet}.1", f"{subnet}.2"
        self.server = RedisServer(directory, port=6379, host=self.there, launcher=["ip", "netns", "exec", self.ns])

    def boot(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.near, "type", "veth", "peer", "name", self.far)
        _ip("link", "set", self.far, "netns", self.ns)
        _ip("addr", "add", f"{self.here}/24", "dev", self.near)
        _ip("link", "set", self.near, "up")
        _ip("netns", "exec", self.ns, "ip", "addr", "add", f"{self.there}/24", "dev", self.far)
        _ip("netns", "exec", self.ns, "ip", "link", "set", self.far, "up")
        self.server.start()

    def vanish(self) -> None:
        """The cable first (deleting one end of the pair deletes both), so nothing the dying
        server's kernel sends arrives; then the server and its kernel's connections."""
        _ip("link", "del", self.near)
        self.server.kill()
        _ip("netns", "del", self.ns)

    def tear_down(self) -> None:
        self.server.kill()
        subprocess.run(["ip", "link", "del", self.near], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def redis_host(tmp_path: Path) -> Iterator[RedisHost]:
    host = RedisHost(tmp_path / "redis")
    try:
        host.boot()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        host.tear_down()
        pytest.skip(f"making a Redis host needs root and `ip netns` (iproute2): {exc}")
    except BaseException:
        host.tear_down()
        raise
    yield host
    host.tear_down()


def test_an_idle_worker_finds_its_redis_host_gone_and_back_and_runs_the_next_job(
    redis_host: RedisHost, tmp_path: Path
) -> None:
    speedq = make_speedq(redis_host.server, tmp_path)
    try:
        speedq.start_worker()
        first = speedq.submit("--team", "alpha", "--smoke", "--run-name", "before")
        assert speedq.wait_state(first, "succeeded", "failed", timeout=120)["state"] == "succeeded"
        # The worker now waits on the doorbell, in a read that only the old server could answer
        redis_host.vanish()
        redis_host.boot()
        second = speedq.submit("--team", "alpha", "--smoke", "--run-name", "after")
        assert speedq.wait_state(second, "succeeded", "failed", timeout=120)["state"] == "succeeded"
    finally:
        speedq.stop_all()
