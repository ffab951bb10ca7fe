"""The leaderboard half of the Redis layout: sorted sets of succeeded runs with results, kept in
step with the records by the store's own writes (`index_board` runs in the transaction that
writes the record), so reading a board costs its rows, not the number of jobs ever run.

- `Keys.board_time(team?, model?)`: time-to-GPT-2 entries (`results.beats_gpt2`), scored by
  training seconds: fastest first.
- `Keys.board_bpb(model, team?)`: full runs of one model, scored by minimum val bpb: best first.
- `Keys.board_models`: every model with a bpb set, scored by depth.

A record that stops qualifying (a retried job, results rewritten) leaves the sets it left in the
same transaction. `Store` inherits `BoardStore`; callers use `Store`.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable

import redis

from speedq.connection import text
from speedq.keys import Keys
from speedq.schemas import JobRecord, JobState, depth_of


def board_entries(record: JobRecord) -> dict[str, float]:
    """Every board set the record belongs in, with its score there."""
    results, spec = record.results, record.spec
    if record.state != JobState.succeeded or results is None:
        return {}
    entries: dict[str, float] = {}
    time_s = results.training_time_s
    if results.beats_gpt2 and time_s is not None and math.isfinite(time_s):
        for team in (None, spec.team):
            for model in (None, spec.model):
                entries[Keys.board_time(team, model)] = time_s
    bpb = results.min_val_bpb
    if spec.mode == "full" and bpb is not None and math.isfinite(bpb):
        for team in (None, spec.team):
            entries[Keys.board_bpb(spec.model, team)] = bpb
    return entries


def index_board(pipe: redis.client.Pipeline, record: JobRecord, previous: JobRecord | None) -> None:
    """Queue the board changes from `previous` to `record` on the store's transaction."""
    before = board_entries(previous) if previous is not None else {}
    after = board_entries(record)
    for key in before.keys() - after.keys():
        pipe.zrem(key, record.id)
    for key, score in after.items():
        if before.get(key) != score:
            pipe.zadd(key, {record.id: score})
    if Keys.board_bpb(record.spec.model) in after.keys() - before.keys():
        pipe.zadd(Keys.board_models, {record.spec.model: depth_of(record.spec.model)})


class BoardStore:
    """Store's leaderboard reads (see the module docstring)."""

    conn: redis.Redis

    def get_many(self, job_ids: Iterable[str]) -> builtins.list[JobRecord]:
        raise NotImplementedError  # Store's: records by id, in order

    def fastest_to_gpt2(self, team: str | None, model: str | None, limit: int) -> builtins.list[JobRecord]:
        """Time-to-GPT-2 entries, fastest first."""
        ids = self.conn.zrange(Keys.board_time(team, model), 0, limit - 1)
        return self.get_many([text(i) for i in ids])

    def best_bpb(self, team: str | None, model: str | None) -> builtins.list[JobRecord]:
        """Per model (just `model`, if given), the full run with the lowest minimum val bpb, by depth."""
        models = [model] if model else [text(m) for m in self.conn.zrange(Keys.board_models, 0, -1)]
        with self.conn.pipeline(transaction=False) as pipe:
            for name in models:
                pipe.zrange(Keys.board_bpb(name, team), 0, 0)
            firsts = pipe.execute()
        return self.get_many([text(ids[0]) for ids in firsts if ids])
