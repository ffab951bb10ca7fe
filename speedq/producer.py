"""Putting jobs in and taking them back: submit (with dedupe, team quotas and the budget
reservation of speedq.estimate), cancel, retry."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from speedq import config, estimate, settings
from speedq.errors import BudgetExceeded, InvalidInput, NotYourJob, ProducerError, QuotaExceeded
from speedq.keys import Keys, queue_name, rq_job_id
from speedq.schemas import Estimate, JobRecord, JobSpec, JobState, TeamSettings
from speedq.store import Also, Price, Store, TeamSpend, TeamUsage

# The RQ job function, named by path so the producer never imports the worker.
SUPERVISE = "speedq.worker.supervise"
WEEK_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    created: bool  # False: an active job already held this run and is returned instead


def submit(conn: redis.Redis, spec: JobSpec) -> Submitted:
    """Store and enqueue the job with its cost estimate, which the same write reserves against
    the team's budget (refused, with nothing stored, if it does not fit). The team's run history
    the estimate is made from is read by the claim's own read: two round trips in all, one where
    this process has just submitted a job like it (speedq.store_guess)."""
    record, created = Store(conn).create_claiming_run(spec, guard=admit, also=enqueue_in(conn),
                                                      price=pricing(spec))
    return Submitted(record, created=created)


def pricing(spec: JobSpec) -> Price:
    """The spec's estimate from a team run history, at the configured prices."""
    from speedq.accounting import prices

    return partial(estimate.estimate, spec, prices=prices())


def estimate_for(store: Store, spec: JobSpec) -> Estimate:
    return pricing(spec)(store.run_history(spec))


def admit(team: TeamSettings, usage: TeamUsage, needed_s: float = 0) -> None:
    """Refuse a submit from a team this queue does not take, or over its quotas."""
    if not team.added and not settings.get().open_teams:
        raise QuotaExceeded(
            f"team {team.name!r} has not been added (speedq team add {team.name}); this queue takes added teams only"
        )
    check_quota(team, usage, needed_s)


def check_quota(team: TeamSettings, usage: TeamUsage, needed_s: float = 0) -> None:
    """Refuse a submit that would put the team over max-queued, or whose estimate does not fit
    in its budget beside what is spent and what its runs in flight reserve."""
    if needed_s > config.MAX_JOB_GPU_SECONDS:  # whatever the budget: a typo, not a speedrun
        raise InvalidInput(f"this run's estimated {needed_s / 3600:.3g} GPU-hours are more than speedq takes as "
                           f"one job ({config.MAX_JOB_GPU_SECONDS / 3600:.3g}); check its train args")
    if team.max_queued is not None and usage.queued >= team.max_queued:
        raise QuotaExceeded(
            f"team {team.name!r} has {usage.queued} queued jobs, at its max-queued of {team.max_queued}; "
            "wait for some to start or cancel one"
        )
    why = estimate.refusal(team, usage.gpu_seconds, usage.reserved_s, needed_s)
    if why is not None:
        raise BudgetExceeded(why)


def over_budget_now(store: Store, team: str, spend: TeamSpend | None = None) -> str | None:
    """Why a job of `team` (its estimate reserved already) may not start its round now: the
    budget was lowered under what is spent and reserved. None: it may start. `spend`: the
    team's figures if the caller has just read them (no read here then)."""
    if spend is None:
        team_settings = store.team(team)
        if team_settings.gpu_hours_budget is None:
            return None  # most teams: one read
        usage = store.team_usage(team)
        spend = TeamSpend(team_settings, usage.gpu_seconds, usage.reserved_s)
    return estimate.refusal_at_start(spend.settings, spend.gpu_seconds, spend.reserved_s)


def enqueue_in(conn: redis.Redis) -> Also:
    """The RQ enqueue as writes queued on a store transaction's pipeline, so the record and its
    RQ job are stored together or not at all."""

    def enqueue(pipe: redis.client.Pipeline, record: JobRecord) -> JobRecord:
        # The store hands each transaction a record of its own (new, or a copy of the stored
        # one), so it is named here rather than copied: a copy was a tenth of a submit's CPU.
        record.rq_job_id = rq_job_id(record.id, record.rq_job_id)
        queue = Queue(queue_name(record.spec.backend, record.spec.team, record.spec.priority), connection=conn)
        queue.enqueue(
            SUPERVISE,
            record.id,
            job_id=record.rq_job_id,
            job_timeout=-1,  # the supervisor bounds each attempt itself; a run takes hours
            result_ttl=WEEK_S,
            failure_ttl=WEEK_S,
            description=f"speedrun {record.id} {record.spec.run_key}",
            pipeline=pipe,
        )
        ring(pipe)
        return record

    return enqueue


def ring(conn: redis.Redis | redis.client.Pipeline) -> None:
    """Ring the doorbell idle workers wait on (fair_share): one ring per job enqueued, the last
    DOORBELL_KEPT kept while no worker listens."""
    conn.lpush(Keys.doorbell, 1)
    conn.ltrim(Keys.doorbell, 0, config.DOORBELL_KEPT - 1)


def enqueue_supervisor(
    conn: redis.Redis, record: JobRecord, change: Callable[[JobRecord], object] | None = None
) -> JobRecord:
    """Hand the job to RQ under a new RQ job id, in the transaction that applies `change` to its
    record: a retry, or re-homing a job whose worker died."""
    return Store(conn).update(record.id, change or (lambda r: None), also=enqueue_in(conn))


def _owned(store: Store, job_id: str, team: str) -> JobRecord:
    record = store.get(job_id)
    if record.spec.team != team:
        raise NotYourJob(f"job {job_id} belongs to team {record.spec.team!r}, not {team!r}")
    return record


def cancel(conn: redis.Redis, job_id: str, team: str) -> JobRecord:
    """A queued job is cancelled at once; a running one is stopped by its worker within a poll."""
    store = Store(conn)
    record = _owned(store, job_id, team)
    if record.state.terminal:
        raise ProducerError(f"job {job_id} already ended ({record.state.value})")

    def mark(r: JobRecord) -> None:
        if r.state == JobState.queued:
            r.state = JobState.cancelled
            r.error = "cancelled while queued"
        elif not r.state.terminal:
            r.cancel_requested = True

    record = store.update(job_id, mark)
    if record.state == JobState.cancelled and record.rq_job_id:
        # the record already says cancelled and the worker checks it: an RQ job already gone or
        # already started is not an error here
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            Job.fetch(record.rq_job_id, connection=conn).cancel()
    return record


def retry(conn: redis.Redis, job_id: str, team: str) -> JobRecord:
    """Run a failed or cancelled job again: a fresh round of attempts, resuming its checkpoints."""
    store = Store(conn)
    record = _owned(store, job_id, team)
    if not record.state.terminal or record.state == JobState.succeeded:
        raise ProducerError(f"job {job_id} is {record.state.value}; only failed or cancelled jobs can be retried")
    # A retry spends GPU-hours too: its estimate is reserved again (by the update that requeues it).
    check_quota(store.team(team), store.team_usage(team), record.estimate.gpu_seconds if record.estimate else 0)
    holder = store.reclaim_run(record)
    if holder is not None:
        raise ProducerError(f"run {record.spec.run_key} is held by active job {holder.id}")

    def requeue(r: JobRecord) -> None:
        r.state = JobState.queued
        r.error = None
        r.cancel_requested = False
        r.finished_at = None
        r.round_start = len(r.attempts)
        r.queued_at = time.time()

    return enqueue_supervisor(conn, record, requeue)
