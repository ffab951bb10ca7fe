"""What a worker read when it took a job, handed to the work horse it forks for that job.

The pop's one script takes the job's slot, its turn and its lease, and reads its record and its
team's spend (fair_share.pop_in_turn); the horse, a fork of the worker, finds that reading here
instead of taking the lease and reading again: one round trip less between a submit and its
launch. The worker parses the reply before it forks: a fork's first validation of a record runs
cold, on pages it must first copy (about 1.5 ms on two cores, against 0.6 ms in the worker). A
record the worker cannot parse, whatever the parse raises, is not handed over: the horse reads it
for itself and fails that job, never the worker.

Only the job last taken is held, and only for half the lease taken with it: a horse run any
other way, or later, finds nothing and reads for itself. The horse's writes before a launch
check the lease and the record they were decided from, so a record changed meanwhile is
decided again, as after any read.
"""

from __future__ import annotations

import time

from speedq.store_leases import Reading

_given: tuple[str, float, Reading] | None = None


def give(job_id: str, read: Reading | None, lease_s: float, taken_at: float) -> None:
    """Hold the pop's reading of `job_id`, whose lease it took for `lease_s` at `taken_at`
    (time.monotonic(), before the pop was sent); None holds nothing, and drops what was held:
    a reading is only ever for the job just popped."""
    global _given
    _given = (job_id, taken_at + lease_s / 2, read) if read is not None else None


def take(job_id: str) -> Reading | None:
    """The reading handed over for `job_id`, if it is the last one given and still fresh; used up
    either way."""
    global _given
    given, _given = _given, None
    if given is None or given[0] != job_id or time.monotonic() > given[1]:
        return None
    return given[2]
