"""The Redis layout: job records, listing indexes, run claims. Nobody else builds a key name.

Each job record is one JSON string. Listing reads a sorted set (score = creation time) chosen
for the filter, so `ls` costs the same with ten records or a hundred thousand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis

from speedq.schemas import JobRecord, JobState, ListQuery, TeamWebhook

PREFIX = "speedq"
QUEUE_PREFIX = "speedq"


class JobNotFound(KeyError):
    pass


class Keys:
    seq = f"{PREFIX}:seq"

    @staticmethod
    def job(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}"

    @staticmethod
    def index(team: str | None = None, state: JobState | str | None = None) -> str:
        state_name = JobState(state).value if state is not None else None
        parts = [f"{PREFIX}:idx"]
        parts.append(f"team={team}" if team else "team=*")
        parts.append(f"state={state_name}" if state_name else "state=*")
        return ":".join(parts)

    @staticmethod
    def supervisor(job_id: str) -> str:
        """Held by the one worker supervising a job; it expires when that worker stops beating."""
        return f"{PREFIX}:supervisor:{job_id}"

    @staticmethod
    def run_claim(team: str, run_name: str) -> str:
        """Which job holds a run directory while it is queued or running (dedupe)."""
        return f"{PREFIX}:run:{team}:{run_name}"

    @staticmethod
    def team_webhook(team: str) -> str:
        """The team's webhook URL, until the team settings record holds it (issue 5)."""
        return f"{PREFIX}:team:{team}:webhook"


# Webhook deliveries: a queue of their own that every worker takes from first.
NOTIFY_QUEUE = f"{QUEUE_PREFIX}-notify"


def queue_name(backend: str, priority: str) -> str:
    """The RQ queue a job waits in. RQ names are free text; ours stay slug-like."""
    return f"{QUEUE_PREFIX}-{backend}-{priority}"


def _indexes(record: JobRecord) -> list[str]:
    team, state = record.spec.team, record.state
    return [Keys.index(), Keys.index(team=team), Keys.index(state=state), Keys.index(team, state)]


class Store:
    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    # -- ids and records -------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"sq-{self.conn.incr(Keys.seq)}"

    def get(self, job_id: str) -> JobRecord:
        raw = self.conn.get(Keys.job(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return JobRecord.model_validate_json(raw)

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord]:
        ids = list(job_ids)
        if not ids:
            return []
        raws = self.conn.mget([Keys.job(i) for i in ids])
        return [JobRecord.model_validate_json(r) for r in raws if r is not None]

    def put_many(self, records: Iterable[JobRecord]) -> None:
        """Write new records and their index entries in one round trip, claiming no runs: for
        loading a copy of a queue (benchmarks, restores), not for submitting."""
        with self.conn.pipeline(transaction=False) as pipe:
            for record in records:
                self._write(pipe, record, previous=None)
            pipe.execute()

    def create_claiming_run(self, record: JobRecord) -> JobRecord | None:
        """Store a new record and claim its run; if an active job holds the run, return that one."""
        return self._claim_run(record, store_record=True)

    def reclaim_run(self, record: JobRecord) -> JobRecord | None:
        """Claim the run again for a retried job; returns the job that holds it, if another does."""
        return self._claim_run(record, store_record=False)

    def _claim_run(self, record: JobRecord, store_record: bool) -> JobRecord | None:
        # One optimistic transaction, so two submits racing for one run make one job.
        claim = Keys.run_claim(record.spec.team, record.spec.run_name or "")
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(claim)
                    holder = pipe.get(claim)
                    if holder is not None and holder.decode() != record.id:
                        existing = self._get_active(pipe, holder.decode())
                        if existing is not None:
                            pipe.unwatch()
                            return existing
                    pipe.multi()
                    pipe.set(claim, record.id)
                    if store_record:
                        self._write(pipe, record, previous=None)
                    pipe.execute()
                    return None
                except redis.WatchError:
                    continue

    def _get_active(self, pipe: redis.client.Pipeline, job_id: str) -> JobRecord | None:
        raw = pipe.get(Keys.job(job_id))
        if raw is None:
            return None
        record = JobRecord.model_validate_json(raw)
        return None if record.state.terminal else record

    def update(self, job_id: str, change: Callable[[JobRecord], object]) -> JobRecord:
        """Apply `change` to the stored record atomically (retrying if someone else wrote it).

        Keeps the listing indexes and the run claim in step with the state.
        """
        key = Keys.job(job_id)
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(job_id)
                    before = JobRecord.model_validate_json(raw)
                    after = before.model_copy(deep=True)
                    change(after)
                    after.updated_at = time.time()
                    pipe.multi()
                    self._write(pipe, after, previous=before)
                    if after.state.terminal and not before.state.terminal:
                        self._release_claim(pipe, after)
                    pipe.execute()
                    return after
                except redis.WatchError:
                    continue

    def _write(self, pipe: redis.client.Pipeline, record: JobRecord, previous: JobRecord | None) -> None:
        pipe.set(Keys.job(record.id), record.model_dump_json())
        if previous is not None and previous.state != record.state:
            for index in _indexes(previous):
                pipe.zrem(index, record.id)
        if previous is None or previous.state != record.state:
            for index in _indexes(record):
                pipe.zadd(index, {record.id: record.created_at})

    def _release_claim(self, pipe: redis.client.Pipeline, record: JobRecord) -> None:
        # Only if this job still holds it: a later job may own the run by now.
        claim = Keys.run_claim(record.spec.team, record.spec.run_name or "")
        pipe.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1, claim, record.id,
        )

    # -- supervision: one worker per job, proven by a heartbeat ----------------------------------

    def acquire_supervision(self, job_id: str, worker: str, ttl_s: float) -> str | None:
        """Take the job for `worker`; returns the holder's name if another live worker has it."""
        key = Keys.supervisor(job_id)
        if self.conn.set(key, worker, nx=True, px=int(ttl_s * 1000)):
            return None
        holder = self.conn.get(key)
        if holder is None:  # expired between the two calls
            return self.acquire_supervision(job_id, worker, ttl_s)
        if holder.decode() == worker:
            self.conn.pexpire(key, int(ttl_s * 1000))
            return None
        return holder.decode()

    def renew_supervision(self, job_id: str, worker: str, ttl_s: float) -> bool:
        """Extend our hold; False if it lapsed and someone else took the job."""
        script = (
            "local h = redis.call('get', KEYS[1]) "
            "if h == ARGV[1] or not h then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return 1 end "
            "return 0"
        )
        return bool(self.conn.eval(script, 1, Keys.supervisor(job_id), worker, int(ttl_s * 1000)))

    def release_supervision(self, job_id: str, worker: str) -> None:
        self.conn.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1, Keys.supervisor(job_id), worker,
        )

    def supervised(self, job_id: str) -> bool:
        return bool(self.conn.exists(Keys.supervisor(job_id)))

    # -- team webhooks ---------------------------------------------------------------------------

    def team_webhook(self, team: str) -> str | None:
        raw = self.conn.get(Keys.team_webhook(team))
        return raw.decode() if raw is not None else None

    def set_team_webhook(self, setting: TeamWebhook) -> None:
        if setting.url is None:
            self.conn.delete(Keys.team_webhook(setting.team))
        else:
            self.conn.set(Keys.team_webhook(setting.team), setting.url)

    # -- listing ---------------------------------------------------------------------------------

    def list(self, query: ListQuery) -> list[JobRecord]:
        """Newest first."""
        ids = self.conn.zrevrange(Keys.index(query.team, query.state), 0, query.limit - 1)
        return self.get_many(i.decode() for i in ids)

    def count(self, team: str | None = None, state: JobState | None = None) -> int:
        return int(self.conn.zcard(Keys.index(team, state)))

    def active_ids(self) -> list[str]:
        """Every job not yet finished, for the worker's reaper."""
        ids: list[str] = []
        for state in JobState:
            if not state.terminal:
                ids.extend(i.decode() for i in self.conn.zrange(Keys.index(state=state), 0, -1))
        return ids
