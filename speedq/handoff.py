"""What a worker read when it took a job, handed to the work horse it forks for that job.

The pop's one script takes the job's slot, its turn and its lease, and reads its record and its
team's spend (store_leases.take_popped); the horse, a fork of the worker, finds that read here
instead of taking the lease and reading again: one round trip less between a submit and its
launch. Only the job just taken is held, and only briefly: a horse run any other way (or late)
finds nothing and reads for itself. Each write the horse makes checks the lease and the record it
was decided from, so a record changed meanwhile is decided again, as after any read.
"""

from __future__ import annotations

import time

from speedq.store_leases import Reading

_given: tuple[str, float, Reading] | None = None


def give(job_id: str, reading: Reading) -> None:
    global _given
    _given = (job_id, time.monotonic(), reading)


def take(job_id: str, max_age_s: float) -> Reading | None:
    """The read handed over for `job_id`, if it is the last one given and younger than
    `max_age_s`; used up either way."""
    global _given
    given, _given = _given, None
    if given is None or given[0] != job_id or time.monotonic() - given[1] > max_age_s:
        return None
    return given[2]
