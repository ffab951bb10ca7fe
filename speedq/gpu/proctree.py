"""The process table, read from /proc: who is whose child (Linux only; no psutil needed)."""

from __future__ import annotations

from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid for every process visible now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended while we looked
            found[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
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
