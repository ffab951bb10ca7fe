"""The supervision half of the Redis layout: one worker per job, proven by a heartbeat. The lease
key proves a worker is alive; `Keys.held` indexes every lease by its expiry, so the reaper finds
the jobs of dead workers in one range read, however many jobs are active. `Store` inherits it;
callers use `Store`, never this class alone.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

import redis

from speedq.connection import text
from speedq.keys import Keys, halves
from speedq.schemas import JobRecord
from speedq.store_apply import Script
from speedq.store_teams import TeamSpend, team_settings

# Lua: take or renew job `job`'s lease for `worker` (`ms` long) and index its expiry; returns the
# other live worker holding it, if one does.
LEASE = """
local function take_lease(lease, held, worker, ms, job)
  local h = redis.call('get', lease)
  if h and h ~= worker then return h end
  redis.call('set', lease, worker, 'px', ms)
  local t = redis.call('time')
  redis.call('zadd', held, t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ms), job)
  return false
end
"""
_ACQUIRE = Script(LEASE + "return take_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])")
# Lua: take the job's lease as take_lease does, and then read the job's record (`job_key`) and
# what a round's start checks the budget against: its team's settings, GPU-seconds and reserved
# GPU-seconds. Only the record names the team, so those keys are put together here: ARGV[cut] to
# ARGV[cut + 5] are each key's text before and after the name.
# {holder}, {false, false} (no record) or {false, record, settings or false, GPU-seconds, reserved}.
READING = LEASE + """
local function lease_and_read(lease, held, worker, ms, job, job_key, cut)
  local h = take_lease(lease, held, worker, ms, job)
  if h then return {h} end
  local raw = redis.call('get', job_key)
  if not raw then return {false, false} end
  -- A record that is not speedq's JSON is returned as it is, for the reader to refuse in Python:
  -- an error here would end the pop's script after its pop, and the worker with it.
  local ok, record = pcall(cjson.decode, raw)
  local team = ok and type(record) == 'table' and type(record.spec) == 'table' and record.spec.team
  if type(team) ~= 'string' then return {false, raw, false, {}, false} end
  local function key(i) return ARGV[i] .. team .. ARGV[i + 1] end
  return {false, raw, redis.call('get', key(cut)), redis.call('hvals', key(cut + 2)), redis.call('get', key(cut + 4))}
end
"""
_ACQUIRE_READ = Script(READING + "return lease_and_read(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], KEYS[3], 4)")
# A team's keys with the name cut out, for READING.
TEAM_KEY_HALVES = [half for part in (None, "gpu-seconds", "reserved")
                   for half in halves(lambda name, part=part: Keys.team(name, part))]  # type: ignore[misc]

# (the other live worker holding the job, None, None), or (None, its record, its team's spend),
# or (None, None, None): the job is gone.
Reading = tuple[str | None, JobRecord | None, TeamSpend | None]

_RELEASE = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('zrem', KEYS[2], ARGV[2])
end
return 0
""")


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a job (see Store.acquire_supervision)."""

    worker: str
    ttl_s: float


class LeaseLost(Exception):
    """Another worker holds the job's lease: the write was refused."""


def lease_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class LeaseStore:
    """Store's lease methods (see the module docstring)."""

    conn: redis.Redis

    def acquire_supervision(self, job_id: str, worker: str, ttl_s: float) -> str | None:
        """Take the job for `worker`; returns the holder's name if another live worker has it."""
        holder = _ACQUIRE.run(self.conn, (Keys.supervisor(job_id), Keys.held), worker, lease_ms(ttl_s), job_id)
        return None if holder is None else text(holder)

    def acquire_reading(self, job_id: str, worker: str, ttl_s: float) -> Reading:
        """Take the job for `worker` and read its record and its team's spend, in one round trip."""
        return reading(_ACQUIRE_READ.run(
            self.conn, (Keys.supervisor(job_id), Keys.held, Keys.job(job_id)), worker, lease_ms(ttl_s), job_id,
            *TEAM_KEY_HALVES,
        ))

    def renew_supervision(self, job_id: str, worker: str, ttl_s: float) -> bool:
        """Extend our hold; False if it lapsed and someone else took the job."""
        return _ACQUIRE.run(self.conn, (Keys.supervisor(job_id), Keys.held), worker, lease_ms(ttl_s), job_id) is None

    def release_supervision(self, job_id: str, worker: str) -> None:
        _RELEASE.run(self.conn, (Keys.supervisor(job_id), Keys.held), worker, job_id)

    def supervised(self, job_id: str) -> bool:
        return bool(self.conn.exists(Keys.supervisor(job_id)))

    def now(self) -> float:
        """Redis's clock: lease expiries are written in it, so every worker compares against it."""
        seconds, micros = self.conn.time()
        return seconds + micros / 1e6

    def expired_holds(self, now: float, limit: int, skip: int = 0) -> builtins.list[str]:
        """Jobs whose supervising worker stopped renewing before `now`, oldest first, after the
        first `skip` of them."""
        return [text(i) for i in self.conn.zrangebyscore(Keys.held, "-inf", now * 1000, start=skip, num=limit)]


def reading(reply: list[Any]) -> Reading:
    """acquire_reading's reply (or the pop's, fair_share.pop_in_turn), parsed."""
    if reply[0] is not None:
        return text(reply[0]), None, None
    if reply[1] is None:
        return None, None, None
    record = JobRecord.from_key(reply[1])
    _, _, settings, seconds, reserved = reply
    spend = TeamSpend(settings=team_settings(record.spec.team, settings),
                      gpu_seconds=sum(float(v) for v in seconds), reserved_s=int(reserved or 0))
    return None, record, spend
