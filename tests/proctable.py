"""A watcher thread that samples the process table throughout a test and keeps, per run
directory, the most runners and training processes it ever saw alive at once."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

from speedq.gpu.proctree import MARK_ENV, environ_of, start_ticks

RUNNER = b"speedq.gpu.runner"
TRAINING = b"speedq.gpu.rank"  # every training process runs through the fence wrapper
LAUNCHER = b"speedq.sim.torchrun"  # the sim's torchrun names the rank module in its argv


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _kind(cmdline: bytes) -> str | None:
    if RUNNER in cmdline:
        return "runner"
    if TRAINING in cmdline and LAUNCHER not in cmdline:
        return "training"
    return None


def sample() -> dict[str, dict[str, int]]:
    """{run dir: {"runner": n, "training": n}} for the processes alive now. A process forked by
    one of its own kind (a runner starting a stage, before the exec) is not a second one."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"runner": 0, "training": 0})
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        kind = _kind(_cmdline(pid))
        if kind is None or start_ticks(pid) is None:
            continue
        run_dir = environ_of(pid).get(MARK_ENV)
        if run_dir is None or _kind(_cmdline(_ppid(pid))) == kind:
            continue
        counts[run_dir][kind] += 1
    return counts


class ProcessWatch:
    def __init__(self) -> None:
        self.most: dict[str, dict[str, int]] = defaultdict(lambda: {"runner": 0, "training": 0})
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for run_dir, counts in sample().items():
                for kind, n in counts.items():
                    self.most[run_dir][kind] = max(self.most[run_dir][kind], n)
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def most_for(self, run_dir: Path) -> dict[str, int]:
        return dict(self.most.get(str(run_dir), {"runner": 0, "training": 0}))
