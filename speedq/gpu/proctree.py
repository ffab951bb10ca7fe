"""Every process of one run directory, found by a mark in its environment, not by process group.

torchrun starts the training ranks in sessions of their own, so killing the runner's process
group leaves them running. Every process an attempt starts inherits `SPEEDQ_RUN_MARK=<run dir>`
(the runner sets it for its stages, the local backend for the runner), and /proc/<pid>/environ
shows it whatever session or parent the process has by now.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARK_ENV = "SPEEDQ_RUN_MARK"  # the run directory every process of an attempt carries
ATTEMPT_ENV = "SPEEDQ_RUN_ATTEMPT"  # the attempt number the process works for


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def parents() -> dict[int, int]:
    """pid -> parent pid for every process visible now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            found[int(entry.name)] = int(fields[1])
    return found


def children_of(pid: int) -> list[int]:
    return [child for child, parent in parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Children, their children and so on."""
    table = parents()
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        kids = [child for child, parent in table.items() if parent == here]
        found += kids
        todo += kids
    return found


def environ_of(pid: int) -> dict[str, str]:
    """The process's environment as it started ({} if it is gone, a zombie or not ours)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def marked(run_dir: str | Path, up_to_attempt: int | None = None) -> list[int]:
    """Live processes working for `run_dir` (for attempts up to `up_to_attempt`, if given: never
    a newer attempt's), this one excepted."""
    want = str(run_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = environ_of(int(entry.name))
        if env.get(MARK_ENV) != want:
            continue
        number = env.get(ATTEMPT_ENV, "")
        if up_to_attempt is not None and number.isdigit() and int(number) > up_to_attempt:
            continue
        if start_ticks(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def end_marked(
    run_dir: str | Path, up_to_attempt: int | None = None, grace_s: float = 0.0, wait_s: float = 10.0
) -> list[int]:
    """End every process of `run_dir` (of attempts up to `up_to_attempt`, if given): SIGTERM,
    then SIGKILL after `grace_s`, and wait until none is left or `wait_s` passes. Returns the pids
    still alive (empty when all ended)."""
    signals = ((signal.SIGTERM, grace_s), (signal.SIGKILL, wait_s)) if grace_s > 0 else ((signal.SIGKILL, wait_s),)
    left = marked(run_dir, up_to_attempt)
    for sig, wait in signals:
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if start_ticks(pid) is not None]
        left = marked(run_dir, up_to_attempt)
        if not left:
            return []
    return left
