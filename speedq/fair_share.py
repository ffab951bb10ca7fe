"""Which job a worker takes next: teams in turn, priority order within a team, and no job from a
team already running its `max_running`.

RQ's own `round_robin` dequeue strategy rotates over queues, not teams: with a queue per team
and priority, a team with jobs in two priorities would get two turns in a row. And it rotates per
worker: N idle workers would all start with the same team. So the rotation lives in Redis
(`Keys.turns`: each team's last turn, shared by every worker), and one script both picks the team
whose turn is oldest and pops its job, so two workers popping at once take two teams in turn:
one turn per team per job started, whatever the priorities and however long each queue is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.utils import as_text
from rq.worker import WorkerStatus

from speedq import config, handoff, settings
from speedq.keys import NOTIFY_QUEUE, Keys, queue_name
from speedq.store import Store, TeamLoad
from speedq.store_apply import Script

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


# KEYS: the turns zset, the turn counter, then queue keys in plan order; ARGV[i]: the team of
# KEYS[i + 2] ('' for the notify queue, which always goes first and takes no turn). Tries the
# teams in order of their last turn (never served first; ties in plan order), pops the first
# queued job, and gives its team the newest turn.
_POP_IN_TURN = Script("""
local order = {}
for i = 3, #KEYS do
  local team = ARGV[i - 2]
  local turn = -2
  if team ~= '' then turn = tonumber(redis.call('zscore', KEYS[1], team) or '-1') end
  order[#order + 1] = {turn, i}
end
table.sort(order, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
for _, entry in ipairs(order) do
  local id = redis.call('lpop', KEYS[entry[2]])
  if id then
    local team = ARGV[entry[2] - 2]
    if team ~= '' then redis.call('zadd', KEYS[1], redis.call('incr', KEYS[2]), team) end
    return {KEYS[entry[2]], id}
  end
end
return false
""")


def pop_in_turn(conn: redis.Redis, team_of: dict[str, str | None]) -> tuple[bytes, bytes] | None:
    """Pop the next job from the queue keys `team_of` maps to their teams (in plan order): the
    team whose turn is oldest across all workers goes first. None if every queue is empty."""
    keys = list(team_of)
    teams = (team_of[k] or "" for k in keys)
    popped = _POP_IN_TURN.run(conn, (Keys.turns, Keys.turn_counter, *keys), *teams)
    return (popped[0], popped[1]) if popped else None


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
                taken = self._take(store, current, block)
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

    def _take(self, store: Store, current: Plan, block: int | None) -> tuple[Job, Queue] | None:
        """Pop the first job in plan order whose team has a slot for it. A team that filled up
        since the plan was made loses the race: its job goes back to the front of its queue and
        the pop goes on without that team."""
        skipped: set[str] = set()
        while True:
            candidates = [(team, name) for team, name in current.open if team not in skipped]
            if not candidates:
                return None
            team_of = {Queue(name, connection=self.connection).key: team for team, name in candidates}
            popped = pop_in_turn(self.connection, team_of)
            turn_given = True
            if popped is None and block:
                # Nothing queued: wait on every key (RQ's BLPOP) for the next job, whoever's.
                try:
                    popped = Queue.lpop(list(team_of), block, connection=self.connection)
                except DequeueTimeout:
                    return None
                turn_given = False  # BLPOP gave no team a turn: the take below does
            if popped is None:
                return None
            queue_key, job_id = map(as_text, popped)
            queue = Queue.from_queue_key(queue_key, connection=self.connection)
            try:
                job = Job.fetch(job_id, connection=self.connection)
            except NoSuchJobError:
                continue  # RQ's own dequeue skips a job whose hash is gone
            team = team_of[queue_key]
            speedq_id = job.args[0] if job.args else None
            # The slot, the turn and the lease in one round trip. The lease is held from the pop
            # on: if this worker dies before its work horse starts, it expires and the reaper
            # re-queues the job.
            reading = None
            if team is not None and speedq_id is not None:
                reading = store.take_popped(team, str(speedq_id), self.name, self.speedq_lease_s,
                                            turn=not turn_given)
            if team is None or speedq_id is None or reading is not None:
                self.log.info("Worker %s: %s: %s (team %s)", self.name, queue.name, job.id, team)
                if reading is not None:
                    handoff.give(str(speedq_id), reading, self.speedq_lease_s)  # the work horse's first read
                return job, queue
            queue.push_job_id(job.id, at_front=True)
            skipped.add(team)
            block = None  # the race is lost, not the round: try the other teams at once

    def _waiting(self, names: list[str]) -> bool:
        return any(Queue(name, connection=self.connection).count for name in names)

    def _listen_on(self, names: list[str]) -> None:
        """Keep RQ's own queue list (registry cleaning, `rq info`) in step with the teams."""
        wanted = sorted(names)
        if [q.name for q in self.queues] != wanted:
            self.queues = [Queue(name, connection=self.connection) for name in wanted]
            self._ordered_queues = self.queues[:]
