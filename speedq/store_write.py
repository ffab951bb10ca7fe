"""What a record write queues beside the record, on the pipeline of the store transaction that
writes it: its listing indexes, the team's registration, its budget hold and board entries
(`write_record`), and the per-team usage counters its attempts move (`account`). Only the store
calls these, so the counters and indexes stay exact sums over the records."""

from __future__ import annotations

from collections.abc import Callable

import redis

from speedq import config
from speedq.keys import Keys
from speedq.schemas import JobRecord
from speedq.store_apply import put
from speedq.store_board import index_board
from speedq.store_budget import hold, note_success

# Writes another module adds to a store transaction (called after MULTI, so they are queued
# with the record's): takes the pipeline and the record about to be written, returns the record
# to write.
Also = Callable[["redis.client.Pipeline", JobRecord], JobRecord]


def _indexes(record: JobRecord) -> list[str]:
    team, state = record.spec.team, record.state
    return [Keys.index(), Keys.index(team=team), Keys.index(state=state), Keys.index(team, state)]


def write_record(pipe: redis.client.Pipeline, record: JobRecord, previous: JobRecord | None) -> None:
    """Queue the record and the index entries that move from `previous` (None: a new record)."""
    put(pipe, Keys.job(record.id), record.as_stored())
    hold(pipe, record, previous)
    if previous is not None and previous.state != record.state:
        for index in _indexes(previous):
            pipe.zrem(index, record.id)
    if previous is None or previous.state != record.state:
        for index in _indexes(record):
            pipe.zadd(index, {record.id: record.created_at})
    if previous is None:
        pipe.sadd(Keys.teams, record.spec.team)  # workers find the team's queues from here
    index_board(pipe, record, previous)


def account(pipe: redis.client.Pipeline, before: JobRecord, after: JobRecord) -> None:
    """Per-team usage from the attempts this change began or ended (same transaction)."""
    team = after.spec.team
    for i, attempt in enumerate(after.attempts):
        was = before.attempts[i] if i < len(before.attempts) else None
        if attempt.ended_at is not None and (was is None or was.ended_at is None):
            pipe.hincrbyfloat(Keys.team(team, "gpu-seconds"), after.spec.gpu.type, attempt.gpu_seconds)
            outcome = attempt.outcome.value if attempt.outcome is not None else "unknown"
            pipe.hincrby(Keys.team(team, "attempts"), outcome, 1)
        if was is None and i == after.round_start:
            waited = attempt.started_at - (after.queued_at or after.created_at)
            pipe.lpush(Keys.team(team, "waits"), repr(max(0.0, waited)))
            pipe.ltrim(Keys.team(team, "waits"), 0, config.WAIT_SAMPLES_KEPT - 1)
    note_success(pipe, before, after)
