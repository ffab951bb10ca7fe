"""The team half of the Redis layout: team settings and tokens, running slots, turns and the
per-team usage counters. `Store` inherits it; callers use `Store`, never this class alone.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from speedq.connection import text
from speedq.keys import Keys
from speedq.schemas import JobSpec, JobState, RunSample, TeamSettings
from speedq.store_apply import Script


@dataclass(frozen=True)
class TeamLoad:
    """What a worker needs to know of a team before a dequeue."""

    name: str
    max_running: int | None
    running: int

    @property
    def full(self) -> bool:
        return self.max_running is not None and self.running >= self.max_running


@dataclass(frozen=True)
class TeamUsage:
    """A team's figures that submit quotas compare against."""

    queued: int
    gpu_seconds: float
    reserved_s: int = 0  # what its jobs in flight hold against its budget (see speedq.estimate)


@dataclass(frozen=True)
class TeamSpend:
    """A team's budget and what counts against it: what a round's start is checked against
    (speedq.estimate.refusal_at_start)."""

    settings: TeamSettings
    gpu_seconds: float
    reserved_s: int


# Decides whether a submit may go in, from the team's settings and usage as of the write and the
# GPU-seconds its estimate needs (0 without one); raises to refuse it.
Guard = Callable[[TeamSettings, TeamUsage, float], None]


def team_settings(name: str, raw: bytes | str | None) -> TeamSettings:
    """A team's stored settings; a team nobody added gets open ones (no limits, no token)."""
    return TeamSettings.model_validate_json(raw) if raw is not None else TeamSettings.open(name)


# Lua: take a running slot for a job: yes (1) if it already holds one (a re-delivered or
# reattached job), or if the team has fewer than its limit: `max_running` of its stored
# TeamSettings (at `team_key`; none stored or null: no limit), read here so a dequeue costs one
# round trip.
SLOT = """
local function take_slot(running, team_key, job)
  if redis.call('sismember', running, job) == 1 then return 1 end
  local raw = redis.call('get', team_key)
  local limit = raw and cjson.decode(raw).max_running
  if type(limit) == 'number' and redis.call('scard', running) >= limit then return 0 end
  redis.call('sadd', running, job)
  return 1
end
"""
_TAKE_SLOT = Script(SLOT + "return take_slot(KEYS[1], KEYS[2], ARGV[1])")

# Lua: give `team` the newest turn number (see fair_share).
TURN = """
local function note_turn(turns, counter, team)
  return redis.call('zadd', turns, redis.call('incr', counter), team)
end
"""


class TeamStore:
    """Store's team methods (see the module docstring)."""

    conn: redis.Redis

    def team(self, name: str) -> TeamSettings:
        """The team's settings; a team nobody added gets open ones (no limits, no token)."""
        return team_settings(name, self.conn.get(Keys.team(name)))

    def teams(self) -> builtins.list[TeamSettings]:
        """Every team with a queue, added or not, by name."""
        names = sorted(text(n) for n in self.conn.smembers(Keys.teams))
        if not names:
            return []
        raws = self.conn.mget([Keys.team(n) for n in names])
        return [
            TeamSettings.model_validate_json(raw) if raw is not None else TeamSettings.open(name)
            for name, raw in zip(names, raws, strict=True)
        ]

    def add_team(self, settings: TeamSettings) -> bool:
        """Store a new team; False if one by that name was already added."""
        if not self.conn.set(Keys.team(settings.name), settings.model_dump_json(), nx=True):
            return False
        with self.conn.pipeline() as pipe:
            pipe.sadd(Keys.teams, settings.name)
            if settings.token_hash:
                pipe.hset(Keys.tokens, settings.token_hash, settings.name)
            pipe.execute()
        return True

    def save_team(self, settings: TeamSettings, old_token_hash: str | None) -> None:
        """Overwrite an added team's settings, moving its token entry if the token changed."""
        with self.conn.pipeline() as pipe:
            pipe.set(Keys.team(settings.name), settings.model_dump_json())
            if old_token_hash and old_token_hash != settings.token_hash:
                pipe.hdel(Keys.tokens, old_token_hash)
            if settings.token_hash:
                pipe.hset(Keys.tokens, settings.token_hash, settings.name)
            pipe.execute()

    def team_for_token_hash(self, token_hash: str) -> TeamSettings | None:
        name = self.conn.hget(Keys.tokens, token_hash)
        return self.team(text(name)) if name is not None else None

    def team_loads(self, names: Iterable[str]) -> builtins.list[TeamLoad]:
        """Each team's running limit and running count, in one round trip."""
        names = list(names)
        with self.conn.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(Keys.team(name))
                pipe.scard(Keys.team(name, "running"))
            replies = pipe.execute()
        loads = []
        for i, name in enumerate(names):
            raw, running = replies[2 * i], replies[2 * i + 1]
            limit = TeamSettings.model_validate_json(raw).max_running if raw is not None else None
            loads.append(TeamLoad(name, limit, int(running)))
        return loads

    def team_names(self) -> builtins.list[str]:
        return sorted(text(n) for n in self.conn.smembers(Keys.teams))

    def take_slot(self, team: str, job_id: str) -> bool:
        """A running slot for the job, under the team's max_running as stored right now."""
        return bool(_TAKE_SLOT.run(self.conn, (Keys.team(team, "running"), Keys.team(team)), job_id))

    def release_slot(self, team: str, job_id: str) -> None:
        self.conn.srem(Keys.team(team, "running"), job_id)

    def slot_holders(self, team: str) -> builtins.list[str]:
        return sorted(text(i) for i in self.conn.smembers(Keys.team(team, "running")))

    def team_usage(self, team: str) -> TeamUsage:
        return self._usage(self.conn, team)

    def _usage(self, conn: redis.Redis | redis.client.Pipeline, team: str) -> TeamUsage:
        queued = conn.zcard(Keys.index(team, JobState.queued))
        seconds = conn.hvals(Keys.team(team, "gpu-seconds"))
        reserved = conn.get(Keys.team(team, "reserved"))
        return TeamUsage(queued=int(queued), gpu_seconds=sum(float(v) for v in seconds), reserved_s=int(reserved or 0))

    def gpu_seconds(self, team: str) -> dict[str, float]:
        """GPU-seconds of the team's ended attempts, by GPU type."""
        return {text(k): float(v) for k, v in self.conn.hgetall(Keys.team(team, "gpu-seconds")).items()}

    def run_history(self, spec: JobSpec) -> builtins.list[RunSample]:
        """The team's succeeded runs of the spec's backend, model, mode and GPU type, newest first."""
        return [RunSample.model_validate_json(raw) for raw in self.conn.lrange(Keys.run_history(spec), 0, -1)]

    def queue_waits(self, team: str) -> builtins.list[float]:
        return [float(v) for v in self.conn.lrange(Keys.team(team, "waits"), 0, -1)]

    def attempt_outcomes(self, team: str) -> dict[str, int]:
        """The team's ended attempts by outcome."""
        return {text(k): int(v) for k, v in self.conn.hgetall(Keys.team(team, "attempts")).items()}
