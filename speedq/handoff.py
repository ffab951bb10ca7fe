"""What a worker read when it took a job, handed to the work horse it forks for that job.

The pop's one script takes the job's slot, its turn and its lease, and reads its record and its
team's spend (fair_share.pop_in_turn); the horse, a fork of the worker, finds that reply here
instead of taking the lease and reading again: one round trip less between a submit and its
launch. The reply is handed over as Redis sent it, and the horse parses it: a record the worker
could not read fails that job in its horse, as the horse's own read would, never the worker.

Only the job last taken is held, and only for half the lease taken with it: a horse run any
other way, or later, finds nothing and reads for itself. The horse's writes before a launch
check the lease and the record they were decided from, so a record changed meanwhile is
decided again, as after any read.
"""

from __future__ import annotations

import time
from typing import Any

_given: tuple[str, float, list[Any]] | None = None


def give(job_id: str, reply: list[Any], lease_s: float, taken_at: float) -> None:
    """Hold the pop's `reply` for `job_id`, whose lease it took for `lease_s` at `taken_at`
    (time.monotonic(), before the pop was sent)."""
    global _given
    _given = (job_id, taken_at + lease_s / 2, reply)


def take(job_id: str) -> list[Any] | None:
    """The reply handed over for `job_id`, if it is the last one given and still fresh; used up
    either way."""
    global _given
    given, _given = _given, None
    if given is None or given[0] != job_id or time.monotonic() > given[1]:
        return None
    return given[2]
