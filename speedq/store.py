"""The Redis layout: job records, listing indexes, run claims, teams and their counters, the
leaderboard's indexes (store_board.py), and the budget's reservations and run history
(store_budget.py).
Nobody else builds a key name.

Each job record is one JSON string. Listing reads a sorted set (score = creation time) chosen
for the filter, so `ls` costs the same with ten records or a hundred thousand. Per-team usage
(GPU-seconds, queue waits) is written in the same transaction as the record change it comes
from, so the counters are exact sums over the records.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from speedq import config
from speedq.connection import text
from speedq.errors import JobNotFound
from speedq.keys import NOTIFY_QUEUE, Keys, job_id, queue_name
from speedq.schemas import (
    Estimate,
    JobRecord,
    JobSpec,
    JobState,
    ListQuery,
    LossPoint,
    Progress,
    RunSample,
    TeamSettings,
)
from speedq.store_apply import APPLY, delete_if_equal, packed, writes
from speedq.store_board import BoardStore, index_board
from speedq.store_budget import hold, note_success
from speedq.store_leases import LEASE, Lease, LeaseLost, LeaseStore, lease_ms
from speedq.store_teams import Guard, TeamLoad, TeamSpend, TeamStore, TeamUsage, team_settings

# Re-exported: where callers looked for them before keys.py held them.
__all__ = ["NOTIFY_QUEUE", "Guard", "JobNotFound", "Keys", "Lease", "LeaseLost", "Price", "Store", "TeamLoad",
           "TeamSpend", "TeamUsage", "queue_name"]


# Writes another module adds to a store transaction (called after MULTI, so they are queued
# with the record's): takes the pipeline and the record about to be written, returns the record
# to write.
Also = Callable[["redis.client.Pipeline", JobRecord], JobRecord]

# A new job's cost estimate from its team's history of runs like it (newest first), as the claim
# read it.
Price = Callable[[builtins.list[RunSample]], Estimate]


# What a run claim decides on, in one round trip: the claim's holder and its record (KEYS[6] is
# the job key prefix; the holder's id is only known here), the team's queued count, its
# GPU-seconds, the id sequence, the team's settings, its reserved GPU-seconds (KEYS[7]) and its
# history of runs like this one (KEYS[8], what the submit's cost estimate is made from); and a
# digest of all of them, which _APPLY_CLAIM recomputes to write only if none has changed since.
# The history is in the digest although a newer one only changes an estimate: the estimate is
# what the budget check admits and what the record reserves, so the write stores the estimate
# of the history it checks against, never one of a history already replaced.
# Read by EVAL_RO: the server refuses any write from it, so a refused submit writes nothing.
_CLAIM_STATE = """
local function claim_state()
  local holder = redis.call('get', KEYS[1])
  local holder_raw = false
  if holder then holder_raw = redis.call('get', KEYS[6] .. holder) end
  local s = {holder, holder_raw, redis.call('zcard', KEYS[2]), redis.call('hvals', KEYS[3]),
             redis.call('get', KEYS[4]), redis.call('get', KEYS[5]), redis.call('get', KEYS[7]),
             redis.call('lrange', KEYS[8], 0, -1)}
  local parts = {s[1] or '', s[2] or '', s[3], table.concat(s[4], ','), s[5] or '', s[6] or '', s[7] or '',
                 table.concat(s[8], '\\n')}
  return s, redis.sha1hex(table.concat(parts, '\\n'))
end
"""
_READ_CLAIM = _CLAIM_STATE + """
local s, digest = claim_state()
return {s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], digest}
"""
# ARGV[1]: the digest the read returned; then the writes (store_apply.APPLY). 1 if written.
_APPLY_CLAIM = _CLAIM_STATE + APPLY + """
local _, digest = claim_state()
if digest ~= ARGV[1] then return 0 end
apply(2)
return 1
"""


@dataclass(frozen=True)
class _ClaimRead:
    holder: str | None
    holder_raw: bytes | None
    usage: TeamUsage
    seq: int
    team_raw: bytes | None
    history: builtins.list[RunSample]
    digest: bytes

    @classmethod
    def of(cls, reply: list[Any]) -> _ClaimRead:
        holder, holder_raw, queued, seconds, seq, team_raw, reserved, history, digest = reply
        return cls(
            holder=holder.decode() if holder else None,
            holder_raw=holder_raw or None,
            usage=TeamUsage(queued=int(queued), gpu_seconds=sum(float(v) for v in seconds),
                            reserved_s=int(reserved or 0)),
            seq=int(seq or 0),
            team_raw=team_raw or None,
            history=[RunSample.model_validate_json(raw) for raw in history],
            digest=digest,
        )

    def settings(self, team: str) -> TeamSettings:
        return team_settings(team, self.team_raw)


def _active(raw: bytes | str | None) -> JobRecord | None:
    """The record if it is stored and has not ended."""
    if raw is None:
        return None
    record = JobRecord.model_validate_json(raw)
    return None if record.state.terminal else record


# Store.update's compare-and-apply. KEYS: the record, its lease, the lease index. ARGV: the sha1
# of the record the change was decided on, the worker whose lease to renew ('' for none) and
# its ms, the job id, then the writes (store_apply.APPLY). Replies {'ok'}, {'missing'},
# {'lease', holder} (nothing written) or {'changed', the record now stored}.
_UPDATE = LEASE + APPLY + """
local raw = redis.call('get', KEYS[1])
if not raw then return {'missing'} end
if ARGV[2] ~= '' then
  local h = redis.call('get', KEYS[2])
  if h and h ~= ARGV[2] then return {'lease', h} end
end
if redis.sha1hex(raw) ~= ARGV[1] then return {'changed', raw} end
if ARGV[2] ~= '' then take_lease(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4]) end
apply(5)
return {'ok'}
"""


# Append a loss point "step:loss:time" if it is at least ARGV[3] steps past the last one kept
# (the final step, ARGV[5], needs only to be past it), then cap the list at ARGV[4]. A resumed
# attempt replays steps the curve already has: those are skipped, so each step appears once, the
# first time the run reached it.
_APPEND_LOSS = """
local last = redis.call('lindex', KEYS[1], -1)
if last then
  local step = tonumber(string.match(last, '^(-?%d+):'))
  local gap = tonumber(ARGV[1]) == tonumber(ARGV[5]) and 1 or tonumber(ARGV[3])
  if tonumber(ARGV[1]) < step + gap then return 0 end
end
redis.call('rpush', KEYS[1], ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[6])
redis.call('ltrim', KEYS[1], -tonumber(ARGV[4]), -1)
return 1
"""


def _indexes(record: JobRecord) -> list[str]:
    team, state = record.spec.team, record.state
    return [Keys.index(), Keys.index(team=team), Keys.index(state=state), Keys.index(team, state)]


class Store(TeamStore, BoardStore, LeaseStore):
    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    # -- ids and records -------------------------------------------------------------------------

    @staticmethod
    def job_id_for(number: int) -> str:
        return job_id(number)

    def get(self, job_id: str) -> JobRecord:
        return JobRecord.stored(job_id, self.conn.get(Keys.job(job_id)))

    def get_many(self, job_ids: Iterable[str]) -> builtins.list[JobRecord]:
        ids = list(job_ids)
        if not ids:
            return []
        raws = self.conn.mget([Keys.job(i) for i in ids])
        return [JobRecord.model_validate_json(r) for r in raws if r is not None]

    def create_claiming_run(
        self, spec: JobSpec, guard: Guard | None = None, also: Also | None = None, price: Price | None = None
    ) -> tuple[JobRecord, bool]:
        """Store a new job for `spec` and claim its run; if an active job holds the run, return
        that one instead. Returns the record and whether it is new.

        `price` makes the job's estimate from the team's run history, read in the claim's own
        read, and the record carries it (so reserves it). Two submits racing for a team's last
        queued place make one job: `guard` sees the team's settings and usage as of the write,
        and the estimate's GPU-seconds, and raises to refuse. The id is taken inside the write,
        once both checks pass, so a refused submit writes nothing at all (the sequence counter
        included). `also` adds its own writes (the RQ enqueue) to the same script.
        """
        return self._claim_run(spec, None, guard, also, price)

    def run_holder(self, spec: JobSpec) -> JobRecord | None:
        """The active job holding the spec's run, if one does (a submit would return it)."""
        holder = self.conn.get(Keys.run_claim(spec.team, spec.run_name or ""))
        return _active(self.conn.get(Keys.job(text(holder)))) if holder is not None else None

    def put_many(self, records: Iterable[JobRecord]) -> None:
        """Write new records and their index entries in one round trip, claiming no runs: for
        loading a copy of a queue (benchmarks, restores), not for submitting."""
        with self.conn.pipeline(transaction=False) as pipe:
            for record in records:
                self._write(pipe, record, previous=None)
            pipe.execute()

    def reclaim_run(self, record: JobRecord) -> JobRecord | None:
        """Claim the run again for a retried job; returns the job that holds it, if another does."""
        holder, claimed = self._claim_run(record.spec, record, None, None, None)
        return None if claimed else holder

    def _claim_run(
        self, spec: JobSpec, own: JobRecord | None, guard: Guard | None, also: Also | None, price: Price | None
    ) -> tuple[JobRecord, bool]:
        """(the active job holding the run, False) or (the job now holding it, True): `own`, or
        a new record stored for `spec`. Two round trips: one script reads everything it decides
        on, and another writes only if none of it changed (else it reads again), so two submits
        racing for one run make one job."""
        team = spec.team
        claim = Keys.run_claim(team, spec.run_name or "")
        keys = (claim, Keys.index(team, JobState.queued), Keys.team(team, "gpu-seconds"), Keys.seq, Keys.team(team),
                Keys.job(""), Keys.team(team, "reserved"), Keys.run_history(team, spec.model, spec.mode, spec.gpu.type))
        while True:
            seen = _ClaimRead.of(self.conn.eval_ro(_READ_CLAIM, len(keys), *keys))
            if seen.holder is not None and (own is None or seen.holder != own.id):
                existing = _active(seen.holder_raw)
                if existing is not None:
                    return existing, False
            cost = price(seen.history) if price is not None and own is None else None
            if guard is not None:
                guard(seen.settings(team), seen.usage, cost.gpu_seconds if cost is not None else 0)
            record = own if own is not None else JobRecord(id=self.job_id_for(seen.seq + 1), spec=spec, estimate=cost)
            pipe = writes(self.conn)
            if own is None:
                pipe.set(Keys.seq, seen.seq + 1)
            pipe.set(claim, record.id)
            if also is not None:
                record = also(pipe, record)
            if own is None:
                self._write(pipe, record, previous=None)
            if self.conn.eval(_APPLY_CLAIM, len(keys), *keys, seen.digest, *packed(pipe)):
                return record, True

    def update(
        self, job_id: str, change: Callable[[JobRecord], object], also: Also | None = None,
        seen: JobRecord | None = None, lease: Lease | None = None,
    ) -> JobRecord:
        """Apply `change` to the stored record atomically (again on the newer record if someone
        else wrote it first; `change` may run more than once).

        Keeps the listing indexes and the run claim in step with the state. `also` adds its own
        writes to the same script and may change the record once more (the RQ job id). `seen`:
        the record as the caller last read or wrote it, which saves the read if it is still
        stored (one round trip, else two). `lease`: renewed in the same step, and nothing is
        written if another worker holds it (LeaseLost).
        """
        key = Keys.job(job_id)
        raw = seen.model_dump_json().encode() if seen is not None else None
        while True:
            if raw is None:
                stored = self.conn.get(key)
                if stored is None:
                    raise JobNotFound(f"no job {job_id}")
                raw = stored if isinstance(stored, bytes) else stored.encode()
            before = JobRecord.model_validate_json(raw)
            after = before.model_copy(deep=True)
            change(after)
            after.updated_at = time.time()
            pipe = writes(self.conn)
            if also is not None:
                after = also(pipe, after)
            self._write(pipe, after, previous=before)
            self._account(pipe, before, after)
            if after.state.terminal and not before.state.terminal:
                claim = Keys.run_claim(after.spec.team, after.spec.run_name or "")
                delete_if_equal(pipe, claim, after.id)  # a later job may own the run by now
            held = (lease.worker, lease_ms(lease.ttl_s)) if lease is not None else ("", 0)
            reply = self.conn.eval(
                _UPDATE, 3, key, Keys.supervisor(job_id), Keys.held,
                hashlib.sha1(raw).hexdigest(), *held, job_id, *packed(pipe),
            )
            if reply[0] == b"ok":
                return after
            if reply[0] == b"missing":
                raise JobNotFound(f"no job {job_id}")
            if reply[0] == b"lease":
                raise LeaseLost(f"job {job_id} is supervised by {text(reply[1])}")
            raw = reply[1]  # changed since: decide again on what is stored now

    def _write(self, pipe: redis.client.Pipeline, record: JobRecord, previous: JobRecord | None) -> None:
        pipe.set(Keys.job(record.id), record.model_dump_json())
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

    def _account(self, pipe: redis.client.Pipeline, before: JobRecord, after: JobRecord) -> None:
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

    # -- supervision (the lease methods are LeaseStore's) ---------------------------------------

    def take_over_expired(self, job_id: str, now: float, also: Also) -> JobRecord | None:
        """The job of a dead worker, re-checked in one transaction: if its lease is still gone and
        its hold still expired, drop the hold and free its running slot; if it has not ended,
        apply `also` (a re-enqueue) too. Returns the record re-homed, or None (renewed by a live
        worker, ended, or handled by another reaper)."""
        key, lease = Keys.job(job_id), Keys.supervisor(job_id)
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, lease)  # any acquire or renew rewrites the lease key
                    expiry = pipe.zscore(Keys.held, job_id)
                    if expiry is None or expiry > now * 1000 or pipe.exists(lease):
                        pipe.unwatch()
                        return None
                    raw = pipe.get(key)
                    before = JobRecord.model_validate_json(raw) if raw is not None else None
                    pipe.multi()
                    pipe.zrem(Keys.held, job_id)
                    if before is None:
                        pipe.execute()
                        return None
                    # Its supervision ended with its worker: the slot goes back, and the worker
                    # that picks the job up takes one again.
                    pipe.srem(Keys.team(before.spec.team, "running"), job_id)
                    after = None
                    if not before.state.terminal:
                        after = before.model_copy(deep=True)
                        after.updated_at = time.time()
                        after = also(pipe, after)
                        self._write(pipe, after, previous=before)
                    pipe.execute()
                    return after
                except redis.WatchError:
                    continue

    # -- listing ---------------------------------------------------------------------------------

    def list(self, query: ListQuery) -> builtins.list[JobRecord]:
        """Newest first."""
        ids = self.conn.zrevrange(Keys.index(query.team, query.state), 0, query.limit - 1)
        return self.get_many(text(i) for i in ids)

    def count(self, team: str | None = None, state: JobState | None = None) -> int:
        return int(self.conn.zcard(Keys.index(team, state)))

    def counts(self, team: str | None = None) -> dict[JobState, int]:
        """Jobs by state (of one team, or all), in one round trip."""
        with self.conn.pipeline(transaction=False) as pipe:
            for state in JobState:
                pipe.zcard(Keys.index(team, state))
            return {state: int(n) for state, n in zip(JobState, pipe.execute(), strict=True)}
    # -- loss curves -----------------------------------------------------------------------------

    def append_loss(self, job_id: str, progress: Progress) -> bool:
        """Add the progress's step and loss to the job's loss curve; False if it has none, or it
        is too close to the last point kept. Points closer than total/LOSS_POINTS steps are
        skipped, so a long run keeps about LOSS_POINTS; the list is capped at twice that."""
        if progress.step is None or progress.loss is None or not math.isfinite(progress.loss):
            return False  # a diverged run's nan has no place on a plot; its log says what happened
        gap = max(1, (progress.total or 0) // config.LOSS_POINTS)
        return bool(self.conn.eval(
            _APPEND_LOSS, 1, Keys.loss_history(job_id),
            progress.step, repr(progress.loss), gap, 2 * config.LOSS_POINTS, progress.total or -1,
            repr(progress.updated_at),
        ))

    def loss_history(self, job_id: str) -> builtins.list[LossPoint]:
        return [_loss_point(text(e)) for e in self.conn.lrange(Keys.loss_history(job_id), 0, -1)]

    def loss_histories(self, job_ids: Iterable[str]) -> builtins.list[builtins.list[LossPoint]]:
        """Several jobs' loss curves in one round trip, in the order given."""
        with self.conn.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lrange(Keys.loss_history(job_id), 0, -1)
            return [[_loss_point(text(e)) for e in entries] for entries in pipe.execute()]


def _loss_point(entry: str) -> LossPoint:
    """"step:loss:time", or "step:loss" as stored before points kept their time."""
    step, loss, *when = entry.split(":")
    return LossPoint(step=int(step), loss=float(loss), t=float(when[0]) if when else None)
