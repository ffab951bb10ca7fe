"""The budget half of the store's writes, queued on the pipeline of the record change they come
from: each team's reserved GPU-seconds (the sum of `estimate.reservation_s` over its records, so
it moves with every record written) and its history of succeeded runs (what cost previews
estimate from). Store calls these; nobody else writes the keys."""

from __future__ import annotations

import redis

from speedq import config, estimate
from speedq.keys import Keys
from speedq.schemas import JobRecord, JobState


def hold(pipe: redis.client.Pipeline, record: JobRecord, previous: JobRecord | None) -> None:
    """Move the team's reserved counter by what this write changes of the job's reservation."""
    held = estimate.reservation_s(record) - (estimate.reservation_s(previous) if previous is not None else 0)
    if held:
        pipe.incrby(Keys.team(record.spec.team, "reserved"), held)


def note_success(pipe: redis.client.Pipeline, before: JobRecord, after: JobRecord) -> None:
    """A job that just succeeded leaves its spend for later estimates of its kind of run."""
    if after.state != JobState.succeeded or before.state == JobState.succeeded:
        return
    history = Keys.run_history(after.spec)
    pipe.lpush(history, estimate.sample_of(after).model_dump_json())
    pipe.ltrim(history, 0, config.ESTIMATE_HISTORY_KEPT - 1)
