"""The Redis layout: job records and their listing indexes, with each concern's half in a module
of its own that `Store` inherits or calls: run claims and the submit (store_claim.py), what a
record write queues beside it (store_write.py), teams and their counters (store_teams.py),
supervision leases (store_leases.py), the leaderboard's indexes (store_board.py), the budget's
reservations and run history (store_budget.py) and loss curves (store_loss.py).
Nobody else builds a key name.

Each job record is one JSON string. Listing reads a sorted set (score = creation time) chosen
for the filter, so `ls` costs the same with ten records or a hundred thousand. Per-team usage
(GPU-seconds, queue waits) is written in the same transaction as the record change it comes
from, so the counters are exact sums over the records.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Callable, Iterable

import redis

from speedq.connection import text
from speedq.errors import JobNotFound
from speedq.keys import NOTIFY_QUEUE, Keys, job_id, queue_name
from speedq.schemas import JobRecord, JobState, ListQuery
from speedq.store_apply import APPLY, Script, delete_if_equal, packed, writes
from speedq.store_board import BoardStore
from speedq.store_claim import ClaimStore, Price
from speedq.store_leases import LEASE, Lease, LeaseLost, LeaseStore, lease_ms
from speedq.store_loss import LossStore
from speedq.store_teams import Guard, TeamLoad, TeamSpend, TeamStore, TeamUsage
from speedq.store_write import Also, account, write_record

# Re-exported: where callers looked for them before keys.py held them, or before the store was
# split by concern.
__all__ = ["NOTIFY_QUEUE", "Also", "Guard", "JobNotFound", "Keys", "Lease", "LeaseLost", "Price", "Store",
           "TeamLoad", "TeamSpend", "TeamUsage", "queue_name"]


# Store.update's compare-and-apply. KEYS: the record, its lease, the lease index. ARGV: the sha1
# of the record the change was decided on, the worker whose lease to renew ('' for none) and
# its ms, the job id, then the writes (store_apply.APPLY). Replies {'ok'}, {'missing'},
# {'lease', holder} (nothing written) or {'changed', the record now stored}.
_UPDATE = Script(LEASE + APPLY + """
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
""")


class Store(ClaimStore, TeamStore, BoardStore, LeaseStore, LossStore):
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
        return [JobRecord.from_key(r) for r in raws if r is not None]

    def put_many(self, records: Iterable[JobRecord]) -> None:
        """Write new records and their index entries in one round trip, claiming no runs: for
        loading a copy of a queue (benchmarks, restores), not for submitting."""
        with self.conn.pipeline(transaction=False) as pipe:
            for record in records:
                write_record(pipe, record, previous=None)
            pipe.execute()

    def update(
        self, job_id: str, change: Callable[[JobRecord], object], also: Also | None = None,
        seen: JobRecord | None = None, lease: Lease | None = None,
    ) -> JobRecord:
        """Apply `change` to the stored record atomically (again on the newer record if someone
        else wrote it first; `change` may run more than once).

        Keeps the listing indexes and the run claim in step with the state. `also` adds its own
        writes to the same script and may change the record once more (the RQ job id). `seen`:
        the record as the caller last read or wrote it, which saves the read if it is still
        stored (one round trip, else two); it is what the change is decided from, so neither
        the caller nor `change` may alter it. `lease`: renewed in the same step, and nothing is
        written if another worker holds it (LeaseLost).
        """
        key = Keys.job(job_id)
        raw = seen.as_stored().encode() if seen is not None else None
        before = seen  # read only here: `change` gets a copy
        while True:
            if raw is None:
                stored = self.conn.get(key)
                if stored is None:
                    raise JobNotFound(f"no job {job_id}")
                raw = stored if isinstance(stored, bytes) else stored.encode()
            if before is None:
                before = JobRecord.from_key(raw)
            after = before.model_copy(deep=True)
            change(after)
            after.updated_at = time.time()
            pipe = writes(self.conn)
            if also is not None:
                after = also(pipe, after)
            write_record(pipe, after, previous=before)
            account(pipe, before, after)
            if after.state.terminal and not before.state.terminal:
                claim = Keys.run_claim(after.spec.team, after.spec.run_name or "")
                delete_if_equal(pipe, claim, after.id)  # a later job may own the run by now
            held = (lease.worker, lease_ms(lease.ttl_s)) if lease is not None else ("", 0)
            reply = _UPDATE.run(
                self.conn, (key, Keys.supervisor(job_id), Keys.held),
                hashlib.sha1(raw).hexdigest(), *held, job_id, *packed(pipe),
            )
            if reply[0] == b"ok":
                return after
            if reply[0] == b"missing":
                raise JobNotFound(f"no job {job_id}")
            if reply[0] == b"lease":
                raise LeaseLost(f"job {job_id} is supervised by {text(reply[1])}")
            raw, before = reply[1], None  # changed since: decide again on what is stored now

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
                    before = JobRecord.from_key(raw) if raw is not None else None
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
                        write_record(pipe, after, previous=before)
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
