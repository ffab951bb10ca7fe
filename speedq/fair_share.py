"""Which job a worker takes next: teams in turn, priority order within a team, and no job from a
team already running its `max_running`.

RQ's own `round_robin` dequeue strategy rotates over queues, not teams: with a queue per team
and priority, a team with jobs in two priorities would get two turns in a row. And it rotates per
worker: N idle workers would all start with the same team. So the rotation lives in Redis
(`Keys.turns`: each team's last turn, shared by every worker), and one script both picks the team
whose turn is oldest and pops its job, so two workers popping at once take two teams in turn:
one turn per team per job started, whatever the priorities and however long each queue is.

The same script takes the job: its running slot (a full team's job is not popped at all), and
its lease and hold, so a speedq job never leaves its queue without a worker's hold that the
reaper would find lapsed (webhook deliveries are RQ's own jobs, popped as RQ pops them). An idle
worker does not block on the queues (RQ's BLPOP pops, and a popped job whose answer is lost would
be in no queue and held by no one): it waits on a doorbell every enqueue rings (`Keys.doorbell`),
then pops by script, which takes a ring off with each job it pops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, parse_job_id
from rq.utils import as_text
from rq.worker import WorkerStatus

from speedq import config, handoff, settings
from speedq.keys import JOB_OF_RQ_JOB_LUA, NOTIFY_QUEUE, Keys, halves, queue_name
from speedq.store import Store, TeamLoad
from speedq.store_apply import Script
from speedq.store_leases import READING, TEAM_KEY_HALVES, lease_ms, reading
from speedq.store_teams import SLOT, TURN

log = logging.getLogger("speedq.fair_share")


@dataclass
class Plan:
    """One dequeue round's order: `open` queues in the order to try them, `capped` the queues of
    teams at their running limit (not taken from, but listened to for registry upkeep)."""

    open: list[tuple[str | None, str]] = field(default_factory=list)  # (team, queue name); None: no team
    capped: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.open] + self.capped


def plan(loads: list[TeamLoad], backends: tuple[str, ...]) -> Plan:
    """Teams by name (the pop script reorders them by their last turn); within a team, priority
    first, then backend."""
    ordered = sorted(loads, key=lambda load: load.name)
    # Webhook deliveries first: each takes milliseconds and must not wait behind hours of training.
    result = Plan(open=[(None, NOTIFY_QUEUE)])
    for load in ordered:
        names = [queue_name(b, load.name, p) for p in config.PRIORITIES for b in backends]
        if load.full:
            result.capped.extend(names)
        else:
            result.open.extend((load.name, n) for n in names)
    return result


# KEYS: the turns zset, the turn counter, the held zset, the doorbell, then queue keys in plan
# order. ARGV: the worker, its lease in ms, '1' if the worker has just taken a ring off the
# doorbell itself (else the pop takes one), JOB_OF_RQ_JOB_LUA's two patterns, the halves of the
# lease, record and running-set keys (6 to 11), READING's team halves (12 to 17: the team's
# settings key first, which take_slot reads too), the halves of RQ's job hash key (18 and 19),
# then the team of each queue key ('' for the notify queue, which always goes first and takes no
# turn).
# Tries the teams in order of their last turn (never served first; ties in plan order). A team's
# first job is taken only if its team has a running slot for it, and then in the same step as
# the pop: the slot, the team's newest turn and the job's lease and hold (READING's, with its
# read). So a job leaves its queue only held by a worker: if the answer is lost, or the worker
# dies before its work horse starts, the hold expires and the reaper puts the job back.
# Returns {queue key, RQ job id, READING's reply or false, RQ's job hash}, or false if nothing
# could be taken. The hash is the one RQ's Job.fetch would read next: one round trip less.
_POP_IN_TURN = Script(SLOT + TURN + READING + """
local function k(i, name) return ARGV[i] .. name .. ARGV[i + 1] end
-- Pop the job, with its ring (rings follow the queues), once all else is taken and read.
local function taken(queue, id, read)
  redis.call('lpop', queue)
  if ARGV[3] == '0' then redis.call('lpop', KEYS[4]) end
  return {queue, id, read, redis.call('hgetall', ARGV[18] .. id .. ARGV[19])}
end
local order = {}
for i = 5, #KEYS do
  local team = ARGV[i + 15]
  local turn = -2
  if team ~= '' then turn = tonumber(redis.call('zscore', KEYS[1], team) or '-1') end
  order[#order + 1] = {turn, i, team}
end
table.sort(order, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
for _, entry in ipairs(order) do
  local queue, team = KEYS[entry[2]], entry[3]
  local id = redis.call('lindex', queue, 0)
  if id then
    local job = team ~= '' and (string.match(id, ARGV[4]) or string.match(id, ARGV[5]))
    if not job then
      return taken(queue, id, false)  -- not speedq's (a webhook delivery): RQ's job, as RQ would pop it
    end
    if take_slot(k(10, team), k(12, team), job) == 1 then
      note_turn(KEYS[1], KEYS[2], team)
      return taken(queue, id, lease_and_read(k(6, job), KEYS[3], ARGV[1], ARGV[2], job, k(8, job), 12))
    end
  end
end
return false
""")
_KEY_HALVES = [*halves(Keys.supervisor), *halves(Keys.job), *halves(lambda team: Keys.team(team, "running")),
               *TEAM_KEY_HALVES, *halves(lambda rq_job: as_text(Job.key_for(rq_job)))]


@dataclass(frozen=True)
class Popped:
    queue_key: str
    rq_job_id: str
    reading: list[Any] | None  # the job's lease and read (store_leases.reading); None: a webhook's
    rq_job: dict[bytes, bytes]  # RQ's hash of the job: empty if it is gone


def pop_in_turn(
    conn: redis.Redis, team_of: dict[str, str | None], worker: str, lease_s: float, rung: bool = False
) -> Popped | None:
    """Take the next job from the queue keys `team_of` maps to their teams (in plan order), for
    `worker` (see _POP_IN_TURN): the team whose turn is oldest across all workers goes first.
    None if no queue has a job its team has room for. `rung`: the worker took a ring off the
    doorbell to get here, so the pop takes none."""
    keys = list(team_of)
    teams = (team_of[k] or "" for k in keys)
    popped = _POP_IN_TURN.run(conn, (Keys.turns, Keys.turn_counter, Keys.held, Keys.doorbell, *keys), worker,
                              lease_ms(lease_s), "1" if rung else "0", *JOB_OF_RQ_JOB_LUA, *_KEY_HALVES, *teams)
    if not popped:
        return None
    fields = popped[3]
    return Popped(as_text(popped[0]), as_text(popped[1]), list(popped[2]) if popped[2] else None,
                  dict(zip(fields[::2], fields[1::2], strict=True)))


class FairDequeue(Worker):
    """RQ's worker with a dequeue that reads the team registry before every pop, so teams added
    or first seen after the worker started are served without a restart."""

    speedq_backends: tuple[str, ...] = ()
    speedq_lease_s: float = 30.0

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        store = Store(self.connection)
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on speedq team queues")  # type: ignore[no-untyped-call]  # RQ leaves it unannotated
        idle_since = time.monotonic()
        wait_s = 1.0
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]  # RQ leaves it unannotated
                current = plan(store.team_loads(store.team_names()), self.speedq_backends)
                self._listen_on(current.names)
                # Burst pops without blocking; otherwise block briefly, then look again for new
                # teams and freed slots.
                block = None if timeout is None else min(timeout, settings.get().dequeue_block)
                taken = self._take(current, block)
                if taken is not None:
                    return taken  # the heartbeat above covers the pop: it blocks for less than worker_ttl
                if timeout is None and not self._waiting(current.capped):
                    return None  # burst: nothing left that a slot could free
                if max_idle_time is not None and time.monotonic() - idle_since > max_idle_time:
                    return None
                if timeout is None or not current.open:
                    time.sleep(settings.get().dequeue_block)
                wait_s = 1.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.log.error("Worker %s: Redis unavailable (%s); retrying in %.0f s", self.name, exc, wait_s)
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, 60.0)

    def _take(self, current: Plan, block: int | None) -> tuple[Job, Queue] | None:
        """Take the first job in plan order whose team has a slot for it (pop_in_turn). With
        nothing to take, wait up to `block` seconds for the doorbell an enqueue rings, and look
        once more: a wait never pops a job, so no job leaves its queue without a hold."""
        team_of = {Queue(name, connection=self.connection).key: team for team, name in current.open}
        if not team_of:
            return None
        rung = False
        while True:
            taken_at = time.monotonic()  # the lease the pop takes runs from here
            popped = pop_in_turn(self.connection, team_of, self.name, self.speedq_lease_s, rung)
            if popped is None and block:
                if self.connection.blpop([Keys.doorbell], block) is None:
                    return None
                block, rung = None, True  # rung: one more look, then back to the caller's round
                continue
            if popped is None:
                return None
            queue = Queue.from_queue_key(popped.queue_key, connection=self.connection)
            try:
                job = Job(parse_job_id(popped.rq_job_id), connection=self.connection)
                job.restore(popped.rq_job)  # as Job.fetch would, from the hash the pop read
            except (NoSuchJobError, ValueError):
                continue  # RQ's own dequeue skips a job whose hash is gone (its hold expires)
            self.log.info("Worker %s: %s: %s (team %s)", self.name, queue.name, job.id, team_of[popped.queue_key])
            speedq_id = str(job.args[0]) if job.args else ""
            read = None
            if popped.reading is not None and speedq_id:
                try:
                    read = reading(popped.reading)
                except Exception:  # whatever the parse raises, the horse reads for itself and fails the job
                    self.log.warning("Worker %s: %s: record unreadable here", self.name, speedq_id, exc_info=True)
            handoff.give(speedq_id, read, self.speedq_lease_s, taken_at)  # None drops an earlier pop's reading
            return job, queue

    def _waiting(self, names: list[str]) -> bool:
        return any(Queue(name, connection=self.connection).count for name in names)

    def _listen_on(self, names: list[str]) -> None:
        """Keep RQ's own queue list (registry cleaning, `rq info`) in step with the teams."""
        wanted = sorted(names)
        if [q.name for q in self.queues] != wanted:
            self.queues = [Queue(name, connection=self.connection) for name in wanted]
            self._ordered_queues = self.queues[:]
