"""nanochat's processes in the process table (/proc), found by what they run and where.

A training process is one whose interpreter runs `-m scripts.base_train` itself (or a speedq
wrapper module handed it first): a torchrun launcher names the module too, but as an argument of
its own, and it trains nothing.
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
    ppid: int = 0
    sid: int = 0  # its session: torchrun starts each training in a new one


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process; None when it is gone or a zombie (ended,
    only its entry left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[3]))


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
        stat = _stat(pid)
        if argv and stat is not None:
            found.append(Proc(pid, argv, base_dir, *stat))
    return found


def own_module(argv: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """The module a python command line runs with its own `-m`, and that module's arguments."""
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg == "-m":
            return (args[0], tuple(args[1:])) if args else (None, ())
        if arg.startswith("-m"):
            return arg[2:], tuple(args)
        if arg in ("-W", "-X"):
            args = args[1:]  # the option's value
            continue
        if arg.startswith("-c") or not arg.startswith("-"):
            break  # a command, or a script (torchrun's, say) whose arguments follow
    return None, ()


def is_training(argv: tuple[str, ...]) -> bool:
    """base_train itself, or base_train run by a wrapper module of speedq's that takes it as its
    first argument (`python -m speedq.gpu.rank scripts.base_train ...`). A launcher such as
    torchrun names the module after options of its own, and is not a training process."""
    module, args = own_module(argv)
    return module == TRAIN_MODULE or (module is not None and args[:1] == (TRAIN_MODULE,))


def training_pids(procs: list[Proc]) -> tuple[int, ...]:
    """The trainings among `procs` (one sample of the process table). A training's child seen
    between its fork and its exec (a compiler or probe torch.compile starts) still shows the
    training's command line; it is that training, not a second one."""
    training = {p.pid: p.argv for p in procs if is_training(p.argv)}
    return tuple(sorted(p.pid for p in procs if p.pid in training and training.get(p.ppid) != p.argv))


def in_run_dir(run_dir: Path) -> list[Proc]:
    """nanochat's processes (launchers and trainings) working in `run_dir` right now."""
    run_dir = Path(os.path.realpath(run_dir))
    return [p for p in nanochat_processes() if p.base_dir is not None and Path(os.path.realpath(p.base_dir)) == run_dir]


def trainings(run_dir: Path) -> list[Proc]:
    """The base_train processes training in `run_dir` right now."""
    procs = in_run_dir(run_dir)
    return [p for p in procs if p.pid in training_pids(procs)]


@dataclass
class TrainingWatcher:
    """Samples the process table in a thread for as long as it is entered: the most trainings
    seen in one run dir at one moment, and in which samples each of nanochat's processes there
    (launchers too) was seen first and last."""

    run_dir: Path
    every_s: float = 0.05
    most: int = 0
    crowded: list[tuple[int, ...]] = field(default_factory=list)  # training pid sets seen when more than one
    trained: set[int] = field(default_factory=set)  # every training pid seen
    first_seen: dict[int, int] = field(default_factory=dict)  # pid -> sample number
    last_seen: dict[int, int] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)  # pid -> its command line, shortened
    family: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (parent, session) when first seen
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TrainingWatcher:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            procs = in_run_dir(self.run_dir)
            training = training_pids(procs)
            self.samples += 1
            for proc in procs:
                self.first_seen.setdefault(proc.pid, self.samples)
                self.commands.setdefault(proc.pid, " ".join(proc.argv)[:100])
                self.family.setdefault(proc.pid, (proc.ppid, proc.sid))
                self.last_seen[proc.pid] = self.samples
            self.trained.update(training)
            self.most = max(self.most, len(training))
            if len(training) > 1:
                self.crowded.append(training)
            self._stop.wait(self.every_s)

    def lineage(self, procs: list[Proc]) -> set[int]:
        """`procs` and every process seen that descends from them or shares their sessions (a
        helper they started after they were sampled, a compile worker, say)."""
        sessions = {p.sid for p in procs}
        members = {p.pid for p in procs}
        for pid in sorted(self.first_seen, key=self.first_seen.__getitem__):
            parent, sid = self.family[pid]
            if sid in sessions or parent in members:
                members.add(pid)
        return members

    def overlap(self, old: list[Proc]) -> list[tuple[int, int]]:
        """(old pid, new pid) pairs seen alive in one sample: a process of the attempt `old`
        belongs to (its lineage) still there when one of a later attempt was already."""
        olds = self.lineage(old)
        new = [pid for pid in self.first_seen if pid not in olds]
        return [(o, n) for o in olds if o in self.last_seen for n in new
                if self.first_seen[n] <= self.last_seen[o]]

    def describe(self, pairs: list[tuple[int, int]]) -> str:
        lines = []
        for old in sorted({o for o, _ in pairs}):
            news = [n for o, n in pairs if o == old]
            first_new = min(news, key=lambda n: self.first_seen[n])
            lines.append(
                f"pid {old} ({self.commands[old]}; parent, session {self.family[old]}) "
                f"alive until sample {self.last_seen[old]}, while {len(news)} "
                f"processes of the next attempt had started, the first at sample {self.first_seen[first_new]}: "
                f"pid {first_new} ({self.commands[first_new]}; parent, session {self.family[first_new]}); "
                f"{self.samples} samples in all, one every {self.every_s}s at most"
            )
        return "\n".join(lines)
