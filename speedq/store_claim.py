"""The run-claim half of the Redis layout: a submit claims its run (`Keys.run_claim`, the dedupe)
and writes its record, the sequence and the RQ enqueue in one script, after one read-only
script has read everything it decides on (or, in a process that has just submitted a job like
it, on its guess of that read: `store_guess`). `Store` inherits `ClaimStore`; callers use `Store`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from speedq import store_guess
from speedq.connection import text
from speedq.keys import Keys, job_id
from speedq.schemas import Estimate, JobRecord, JobSpec, JobState, RunSample, TeamSettings
from speedq.store_apply import APPLY, Script, packed, put, writes
from speedq.store_teams import Guard, TeamUsage, team_settings
from speedq.store_write import Also, write_record

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
# Read by EVALSHA_RO: the server refuses any write from it, so a refused submit writes nothing.
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
_READ_CLAIM = Script(_CLAIM_STATE + """
local s, digest = claim_state()
return {s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], digest}
""")
# ARGV[1]: the digest the decision was made on; then the writes (store_apply.APPLY). 1 if
# written, else what _READ_CLAIM would return: the submit decides again with no read of its own.
_APPLY_CLAIM = Script(_CLAIM_STATE + APPLY + """
local s, digest = claim_state()
if digest ~= ARGV[1] then return {s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], digest} end
apply(2)
return 1
""")


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


def active(raw: bytes | str | None) -> JobRecord | None:
    """The record if it is stored and has not ended."""
    if raw is None:
        return None
    record = JobRecord.from_key(raw)
    return None if record.state.terminal else record


class ClaimStore:
    """Store's run claims (see the module docstring)."""

    conn: redis.Redis

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
        return active(self.conn.get(Keys.job(text(holder)))) if holder is not None else None

    def reclaim_run(self, record: JobRecord) -> JobRecord | None:
        """Claim the run again for a retried job; returns the job that holds it, if another does."""
        holder, claimed = self._claim_run(record.spec, record, None, None, None)
        return None if claimed else holder

    def _claim_run(
        self, spec: JobSpec, own: JobRecord | None, guard: Guard | None, also: Also | None, price: Price | None
    ) -> tuple[JobRecord, bool]:
        """(the active job holding the run, False) or (the job now holding it, True): `own`, or
        a new record stored for `spec`. One script reads everything it decides on, and another
        writes only if none of it changed (else it returns what changed, and the decision is
        made again), so two submits racing for one run make one job. A new job's submit starts
        from this process's guess of that read where it has one (`store_guess`): one round trip."""
        team = spec.team
        claim = Keys.run_claim(team, spec.run_name or "")
        keys = (claim, Keys.index(team, JobState.queued), Keys.team(team, "gpu-seconds"), Keys.seq, Keys.team(team),
                Keys.job(""), Keys.team(team, "reserved"), Keys.run_history(spec))

        def read() -> list[Any]:
            return list(_READ_CLAIM.run(self.conn, keys, read_only=True))

        guess = store_guess.take(self.conn, keys) if own is None else None
        reply = guess if guess is not None else read()
        while True:
            seen = _ClaimRead.of(reply)
            held_by_another = seen.holder is not None and (own is None or seen.holder != own.id)
            existing = active(seen.holder_raw) if held_by_another else None
            cost = price(seen.history) if price is not None and own is None and existing is None else None
            try:
                if existing is None and guard is not None:
                    guard(seen.settings(team), seen.usage, cost.gpu_seconds if cost is not None else 0)
            except Exception:
                if reply is not guess:
                    raise
                reply = read()  # a refusal is only ever made on what Redis holds
                continue
            if existing is not None:
                if reply is guess:
                    reply = read()
                    continue
                return existing, False
            record = own if own is not None else JobRecord(id=job_id(seen.seq + 1), spec=spec, estimate=cost)
            pipe = writes(self.conn)
            if own is None:
                put(pipe, Keys.seq, seen.seq + 1)
            put(pipe, claim, record.id)
            if also is not None:
                record = also(pipe, record)
            if own is None:
                write_record(pipe, record, previous=None)
            written = [words for words, _options in pipe.command_stack]
            done = _APPLY_CLAIM.run(self.conn, keys, seen.digest, *packed(pipe))
            if done == 1:
                if own is None:
                    store_guess.keep(self.conn, keys, reply, written)
                return record, True
            reply = list(done)
