"""What every bench script shares: its own redis-server, a `speedq`-ready environment, sample
statistics, and the one way figures are printed (a ratio against a baseline run in the same
process). A package, not a `bench/*.py` file, so `make bench` does not run it as a bench."""

from __future__ import annotations

import argparse
import compileall
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The console scripts installed next to this Python.
RQ_CLI = str(Path(sys.executable).parent / "rq")
SPEEDQ_CLI = str(Path(sys.executable).parent / "speedq")
sys.path.insert(0, str(ROOT))  # for tests.conftest, the tests' RedisServer

from speedq.connection import connect  # noqa: E402
from speedq.store import Store  # noqa: E402
from tests.conftest import RedisServer, children_of, wait_for  # noqa: E402

__all__ = ["ROOT", "RQ_CLI", "SPEEDQ_CLI", "Bench", "Samples", "bench", "children_of", "options", "ratio", "rss_mb",
           "timed", "wait_for"]


@dataclass
class Bench:
    redis: RedisServer
    home: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """For `speedq` and `rq` processes: this bench's Redis and state directory, quiet logs."""
        return {
            **os.environ,
            "SPEEDQ_REDIS_URL": self.redis.url,
            "SPEEDQ_HOME": str(self.home),
            "SPEEDQ_LOG_LEVEL": "WARNING",
        }

    def spawn(self, *args: str) -> subprocess.Popen:
        """A process in a group of its own, so it goes with its children (RQ's work horse and
        scheduler) when the bench ends."""
        proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=open(self.home / f"proc-{len(self.procs)}.log", "w"), start_new_session=True)
        self.procs.append(proc)
        return proc

    def two_sizes(self, small: int, large: int, load: Callable[[Store, int], None]) -> dict[int, Store]:
        """A store of `small` and one of `large` (databases 0 and 1 of this Redis), each filled by
        `load`, once the append-only-file rewrite the big load sets off is over: its fork competes
        for the CPU, and the figures are about the data's size, not about that."""
        stores = {small: Store(connect(self.redis.url)), large: Store(connect(self.redis.url.rsplit("/", 1)[0] + "/1"))}
        for count, store in stores.items():
            load(store, count)
        wait_for(lambda: not stores[large].conn.info("persistence")["aof_rewrite_in_progress"], timeout=120,
                 what="AOF rewrite")
        return stores


@contextmanager
def bench() -> Iterator[Bench]:
    """A redis-server of this run's own on a free port, and a state directory; both go at the end,
    with every process spawned in between (each is its own process group)."""
    # speedq as installed: pip byte-compiles a wheel, but an editable install under
    # PYTHONDONTWRITEBYTECODE (this machine sets it) would compile every module on every start,
    # about 50 ms of each `speedq` command, which no user pays.
    compileall.compile_dir(ROOT / "speedq", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        home = Path(tmp) / "home"
        home.mkdir()
        b = Bench(server, home)
        try:
            yield b
        finally:
            for proc in b.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            server.kill()


def options(doc: str | None, **defaults: int) -> argparse.Namespace:
    """The script's whole-number options (`--jobs 2000`), each with its default."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


@dataclass
class Samples:
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p99(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    def ms(self) -> str:
        return f"median {self.median * 1e3:.2f} ms, p99 {self.p99 * 1e3:.2f} ms (n={len(self.seconds)})"


def timed(action: Callable[[], object], times: int) -> Samples:
    found = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        found.append(time.perf_counter() - start)
    return Samples(found)


def ratio(what: str, measured: float, baseline: float, baseline_name: str) -> float:
    """The one line each figure is reported as."""
    value = measured / baseline
    print(f"RATIO {what}: {value:.2f}x {baseline_name}")
    return value


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
