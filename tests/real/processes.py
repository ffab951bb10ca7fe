"""nanochat's processes in the process table (/proc), found by what they run and where.

A training process is one whose interpreter runs `-m scripts.base_train` itself: a torchrun
launcher names the module too, but as an argument of its own script, and it trains nothing.
Which run it trains for is its NANOCHAT_BASE_DIR.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_MODULE = "scripts.base_train"


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: tuple[str, ...]
    base_dir: str | None  # NANOCHAT_BASE_DIR in its environment


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # a zombie has ended; only its entry is left


def nanochat_processes(under: Path | None = None) -> list[Proc]:
    """Live processes with a NANOCHAT_BASE_DIR (optionally one under `under`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        base_dir = _environ(pid).get("NANOCHAT_BASE_DIR")
        if base_dir is None or (under is not None and not Path(base_dir).is_relative_to(under)):
            continue
        try:
            argv = tuple(a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a)
        except OSError:
            continue
        if argv and _alive(pid):
            found.append(Proc(pid, argv, base_dir))
    return found


def module_of(argv: tuple[str, ...]) -> str | None:
    """The module a python command line runs with its own `-m`, if any."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-W", "-X"):
            next(args, None)  # the option's value
            continue
        if arg.startswith("-c") or not arg.startswith("-"):
            return None  # a command, or a script (torchrun's, say) whose arguments follow
    return None


def trainings(run_dir: Path) -> list[Proc]:
    """The base_train processes training in `run_dir` right now."""
    run_dir = Path(os.path.realpath(run_dir))
    return [p for p in nanochat_processes() if module_of(p.argv) == TRAIN_MODULE
            and p.base_dir is not None and Path(os.path.realpath(p.base_dir)) == run_dir]


@dataclass
class TrainingWatcher:
    """Samples the process table in a thread, recording the most trainings seen in one run dir
    at one moment (and their pids)."""

    run_dir: Path
    every_s: float = 0.05
    most: int = 0
    crowded: list[tuple[int, ...]] = field(default_factory=list)  # the pid sets seen when more than one
    seen: set[int] = field(default_factory=set)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "TrainingWatcher":
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            pids = tuple(sorted(p.pid for p in trainings(self.run_dir)))
            self.samples += 1
            self.seen.update(pids)
            self.most = max(self.most, len(pids))
            if len(pids) > 1:
                self.crowded.append(pids)
            self._stop.wait(self.every_s)
