"""speedq from Python: `Client` submits, reads, cancels and retries jobs against the shared Redis.

The CLI and the HTTP API are thin layers over this class: every input goes through the same
models in `speedq.schemas`, and every refusal is a `speedq.errors.SpeedqError` (a bad value is
`InvalidInput`, one line, and nothing stored changes).

    from speedq import Client, JobSpec

    client = Client()  # SPEEDQ_REDIS_URL, else the embedded Redis
    job = client.submit(JobSpec(team="vision", model="d12", mode="smoke")).job
    done = client.wait(job.id, timeout=3600)
    print(done.state, client.logs(done.id, tail=20))

Heavy imports (RQ, a backend) happen in the methods that need them, so reading a job stays cheap.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from speedq import resp, schemas, settings
from speedq.errors import InvalidInput, NotYourJob
from speedq.keys import Keys

if TYPE_CHECKING:
    import redis

    from speedq.schemas import (
        Comparison,
        JobRecord,
        JobSpec,
        Leaderboard,
        Preview,
        Submitted,
        TeamStats,
    )
    from speedq.store import Store

Model = TypeVar("Model", bound=BaseModel)


@contextmanager
def _validating() -> Iterator[None]:
    """pydantic's refusal as speedq's: one line, exit 2 / 422."""
    try:
        yield
    except ValidationError as exc:
        raise InvalidInput(schemas.describe(exc)) from None


def validated(model: type[Model], values: Mapping[str, Any]) -> Model:
    with _validating():
        return model.model_validate(dict(values))


def _checked(spec: JobSpec | Mapping[str, Any]) -> JobSpec:
    """A submit's validation, the preview's too: the spec's own rules, then the operator's hosts."""
    checked = spec if isinstance(spec, schemas.JobSpec) else validated(schemas.JobSpec, spec)
    checked.check_repo_host(settings.get().repo_hosts)
    return checked


class Client:
    """One queue: a Redis connection (given, or from `SPEEDQ_REDIS_URL`, checked on first use)."""

    def __init__(self, conn: redis.Redis | None = None, *, url: str | None = None) -> None:
        self._conn = conn
        self._url = url
        self._store: Store | None = None

    @property
    def conn(self) -> redis.Redis:
        if self._conn is None:
            from speedq.connection import connect_checked

            self._conn = connect_checked(self._url)
        return self._conn

    @property
    def store(self) -> Store:
        if self._store is None:
            from speedq.store import Store

            self._store = Store(self.conn)
        return self._store

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> Submitted:
        """Validate and enqueue a speedrun. Like arq's `enqueue_job`, a run that already has an
        active job is not queued twice: `created` is False and `job` is the active one."""
        from speedq import producer

        done = producer.submit(self.conn, _checked(spec))
        return schemas.Submitted(created=done.created, job=done.record)

    def preview(self, spec: JobSpec | Mapping[str, Any]) -> Preview:
        """What `submit(spec)` would do, storing nothing: the same validation, the resolved
        commit, nanochat's step count, the estimated GPU-hours and cost, the team's budget left,
        and `refusal`, the line the submit would be refused with now (None: it would go in)."""
        from speedq import preview

        return preview.preview(self.conn, _checked(spec))

    def get(self, job_id: str) -> JobRecord:
        """The job's record; `JobNotFound` if there is none."""
        checked = validated(schemas.JobRef, {"id": job_id}).id  # before connecting: input first
        if self._conn is None:  # one read from a fresh process: a socket, not redis-py
            served, raw = resp.get(self._url or settings.get().redis_url or settings.get().embedded_redis_url(),
                                   Keys.job(checked))
            if served:
                return schemas.JobRecord.stored(checked, raw)
        return self.store.get(checked)

    def list(self, team: str | None = None, state: str | None = None, limit: int | str = 20) -> list[JobRecord]:
        """Jobs newest first, optionally of one team or in one state."""
        given = {"team": team, "state": state, "limit": limit}
        query = validated(schemas.ListQuery, {k: v for k, v in given.items() if v is not None})
        return self.store.list(query)

    def cancel(self, job_id: str, team: str) -> JobRecord:
        """Cancel a job of `team`: at once if queued, within a poll if running."""
        from speedq import producer

        return self._team_action(producer.cancel, job_id, team)

    def retry(self, job_id: str, team: str) -> JobRecord:
        """Run a failed or cancelled job of `team` again, resuming from its checkpoints."""
        from speedq import producer

        return self._team_action(producer.retry, job_id, team)

    def _team_action(self, action: Callable[[redis.Redis, str, str], JobRecord], job_id: str, team: str) -> JobRecord:
        name = validated(schemas.TeamRef, {"team": team}).team
        return action(self.conn, self.get(job_id).id, name)

    def logs(self, job_id: str, tail: int | str | None = None, team: str | None = None) -> str:
        """The run's log ('' before it has one), or its last `tail` lines. With `team`, the job
        must be that team's (`NotYourJob` otherwise)."""
        from speedq import logs as run_logs

        query = validated(schemas.LogQuery, {"tail": tail})
        record = self.get(job_id)
        if team is not None and record.spec.team != team:
            raise NotYourJob(f"job {record.id} belongs to team {record.spec.team!r}, not {team!r}")
        return run_logs.read(record, query.tail)

    def stats(self, team: str | None = None) -> builtins.list[TeamStats]:
        """Per team: jobs by state, GPU-hours, estimated cost, queue waits."""
        from speedq import accounting

        query = validated(schemas.StatsQuery, {"team": team})
        return accounting.stats(self.store, query.team)

    def leaderboard(self, model: str | None = None, team: str | None = None, limit: int | str = 50) -> Leaderboard:
        """Time-to-GPT-2 (runs whose CORE beats GPT-2's on 8xH100, fastest first) and the best
        val bpb per depth, optionally of one model or team."""
        from speedq import leaderboard

        given = {"model": model, "team": team, "limit": limit}
        query = validated(schemas.LeaderboardQuery, {k: v for k, v in given.items() if v is not None})
        return leaderboard.leaderboard(self.store, query)

    def compare(self, *job_ids: str, viewer: str | None = None, loss: bool = False) -> Comparison:
        """Jobs' results side by side, in the order given (`JobNotFound` if one is unknown).
        With `viewer` (a team), other teams' runs without results show their status only; with
        `loss`, each run's loss curve comes too."""
        from speedq import leaderboard

        query = validated(schemas.CompareQuery, {"jobs": list(job_ids)})
        return leaderboard.comparison(self.store, query, viewer=viewer, loss=loss)

    def wait(self, job_id: str, timeout: float | None = None, poll_s: float | None = None) -> JobRecord:
        """Poll the job until it ends or `timeout` seconds pass; the last record read either way
        (check `record.state.terminal`)."""
        every = settings.get().poll_interval if poll_s is None else poll_s
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self.get(job_id)
        while not record.state.terminal:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(every if deadline is None else max(0.0, min(every, deadline - time.monotonic())))
            record = self.store.get(record.id)
        return record
