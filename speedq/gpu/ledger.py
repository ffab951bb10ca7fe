"""The stage ledger: the stages finished in a run dir (layout.LEDGER) or in the shared data dir
(layout.DATA_LEDGER), so that no attempt runs one twice."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError


class LedgerEntry(BaseModel):
    finished_at: float = 0.0
    commit: str | None = None  # the nanochat commit the stage ran at
    attempt: int | None = None  # the attempt that finished it (run-dir stages)
    shards: int | None = None  # how many shards the data stage made ready


Ledger = dict[str, LedgerEntry]  # stage key -> when and how it finished
_LEDGER = TypeAdapter(Ledger)


def write_json_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


def read_ledger(path: Path) -> Ledger:
    """The ledger at `path`; empty when there is none or it is unreadable (the stages then run)."""
    try:
        return _LEDGER.validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return {}


def mark_done(path: Path, key: str, commit: str, attempt: int | None = None, shards: int | None = None) -> None:
    ledger = read_ledger(path)
    ledger[key] = LedgerEntry(finished_at=time.time(), commit=commit, attempt=attempt, shards=shards)
    write_json_atomic(path, _LEDGER.dump_json(ledger, indent=2, exclude_none=True).decode())
