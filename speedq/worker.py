"""The worker: an RQ job function that supervises one speedrun from launch to end.

RQ delivers a job at least once and may deliver it twice (see rq-facts), so `supervise` is
idempotent: a Redis lease proves which worker holds a job, an attempt's backend call id is
stored the moment the backend returns it, and a worker that finds a live call id reattaches
to it instead of launching again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from functools import cache

import redis
from rq import Queue, get_current_job

from speedq import config
from speedq.backends import Backend, BackendError, CallStatus, get_backend
from speedq.notify import notify
from speedq.schemas import Attempt, JobRecord, JobState, Outcome
from speedq import reaper, worker_name
from speedq.fair_share import FairDequeue, plan
from speedq.store import JobNotFound, Store

log = logging.getLogger("speedq.worker")

BASE_TRAIN_STAGE = "base_train"


def heartbeat_ttl_s() -> float:
    """A job whose worker has not beaten for this long is taken over by another worker."""
    return float(os.environ.get("SPEEDQ_HEARTBEAT_TTL", "30"))


def stall_timeout_s() -> float:
    """No new progress for this long ends the attempt as stalled (a hung process)."""
    return float(os.environ.get("SPEEDQ_STALL_TIMEOUT", str(45 * 60)))


def retry_backoff_s(attempts_done: int) -> float:
    base = float(os.environ.get("SPEEDQ_RETRY_BACKOFF", "10"))
    return min(300.0, base * 2 ** max(0, attempts_done - 1))


@cache
def backend_named(name: str) -> Backend:
    # One instance per process, so the local backend can reap the children it started.
    return get_backend(name)


def _worker_name() -> str:
    job = get_current_job()
    if job is not None and job.worker_name:
        return job.worker_name
    return f"{socket.gethostname()}.{os.getpid()}"


def supervise(job_id: str) -> str:
    """RQ entry point. Returns the job's final state (or why it was left alone)."""
    job = get_current_job()
    conn = job.connection if job is not None else None
    if conn is None:
        from speedq.connection import connect

        conn = connect()
    return Supervisor(Store(conn), job_id, _worker_name()).run()


class Supervisor:
    def __init__(self, store: Store, job_id: str, worker: str) -> None:
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.poll_s = config.poll_interval_s()
        self.ttl_s = heartbeat_ttl_s()

    # -- the whole job ---------------------------------------------------------------------------

    def run(self) -> str:
        try:
            record = self.store.get(self.job_id)
        except JobNotFound:
            return "missing"
        if record.state.terminal:
            self._free_running_slot()  # e.g. cancelled while this worker was taking it
            self.store.release_supervision(self.job_id, self.worker)  # the lease taken at the pop
            return record.state.value
        holder = self.store.acquire_supervision(self.job_id, self.worker, self.ttl_s)
        if holder is not None:
            return f"supervised by {holder}"
        try:
            return self._supervise().value
        except _Done:
            return self.store.get(self.job_id).state.value
        finally:
            # The slot first: a worker dying in between leaves a lease that expires, and the
            # reaper frees the slot of a job that ended.
            self._free_running_slot()
            self.store.release_supervision(self.job_id, self.worker)

    def _free_running_slot(self) -> None:
        """The team's running slot (taken at dequeue) goes back once the job has ended; a job
        handed to another worker keeps it, since the slot belongs to the job."""
        try:
            record = self.store.get(self.job_id)
        except JobNotFound:
            return
        if record.state.terminal:
            self.store.release_slot(record.spec.team, self.job_id)

    def _supervise(self) -> JobState:
        record = self._update(self._claim)
        try:
            backend = backend_named(record.spec.backend)
        except BackendError as exc:
            return self._finish(JobState.failed, str(exc))
        while True:
            record = self.store.get(self.job_id)
            attempt = record.current_attempt
            if attempt is None or attempt.outcome is not None:
                if record.cancel_requested:
                    return self._finish(JobState.cancelled, "cancelled")
                if record.attempts_this_round >= record.spec.max_attempts:
                    last = record.current_attempt
                    why = last.error if last and last.error else "no attempts left"
                    return self._finish(JobState.failed, f"gave up after {record.attempts_this_round} attempts: {why}")
                attempt = self._launch(backend, record)
            elif attempt.call_id is None:
                # A worker died between recording the attempt and storing its call id; whether
                # it launched cannot be known, so the attempt is written off, not run twice.
                self._end_attempt(attempt.number, CallStatus(Outcome.lost, "worker died while launching"))
                continue
            status = self._watch(backend, attempt)
            record = self._end_attempt(attempt.number, status)
            if status.outcome == Outcome.succeeded:
                return self._finish(JobState.succeeded, None)
            if status.outcome == Outcome.cancelled or record.cancel_requested:
                return self._finish(JobState.cancelled, status.error or "cancelled")
            if status.outcome is None or not status.outcome.retryable:
                return self._finish(JobState.failed, status.error)
            if record.attempts_this_round >= record.spec.max_attempts:
                continue  # the loop's top says why it gives up
            record = self._update(lambda r: setattr(r, "state", JobState.retrying))
            notify(self.store.conn, record, JobState.retrying)
            self._sleep_beating(retry_backoff_s(record.attempts_this_round))

    # -- one attempt -----------------------------------------------------------------------------

    def _launch(self, backend: Backend, record: JobRecord) -> Attempt:
        """Start a new attempt; the call id is stored the moment the backend returns it."""
        self._update(lambda r: setattr(r, "state", JobState.starting))
        if record.nanochat_commit is None:
            try:
                commit = backend.resolve_ref(record.spec.repo_ref)
            except BackendError as exc:
                self._finish(JobState.failed, str(exc))
                raise _Done from None
            self._update(lambda r: setattr(r, "nanochat_commit", commit))
            record = self.store.get(self.job_id)
        number = len(record.attempts) + 1
        pointer = backend.log_pointer(record)

        def begin(r: JobRecord) -> None:
            r.attempts.append(
                Attempt(number=number, backend=r.spec.backend, worker=self.worker, gpu_count=r.spec.gpu.count)
            )
            r.run_dir = backend.run_dir(r)
            r.log = pointer
            r.started_at = r.started_at or time.time()

        record = self._update(begin)
        try:
            call_id = backend.launch(record, number)
        except BackendError as exc:
            self._end_attempt(number, CallStatus(Outcome.launch_failed, str(exc)))
            self._finish(JobState.failed, str(exc))
            raise _Done from None

        def started(r: JobRecord) -> None:
            r.attempts[number - 1].call_id = call_id
            r.state = JobState.running

        return self._update(started).attempts[number - 1]

    def _watch(self, backend: Backend, attempt: Attempt) -> CallStatus:
        """Poll the call until it ends, writing progress and heartbeats back as it goes."""
        call_id = attempt.call_id or ""
        last_activity = time.time()
        last_seen: tuple[str | None, int | None] = (None, None)
        while True:
            record = self.store.get(self.job_id)
            try:
                status = backend.poll(record, call_id)
            except BackendError as exc:
                # A flaky API is not the run failing: note it and keep watching.
                status = CallStatus()
                self._update(lambda r: setattr(r, "error", f"poll failed (will retry): {exc}"))
            progress = backend.read_progress(record)
            # Activity is a new stage or step; the runner rewrites progress.json even when its
            # training process hangs, so the file's own timestamp proves nothing.
            if progress is not None and (progress.stage, progress.step) != last_seen:
                last_seen, last_activity = (progress.stage, progress.step), time.time()

            def note(r: JobRecord) -> None:
                r.heartbeat_at = time.time()
                r.worker = self.worker
                if r.state in (JobState.starting, JobState.retrying):
                    r.state = JobState.running
                if progress is not None:
                    r.progress = progress
                    current = r.attempts[attempt.number - 1]
                    if progress.resumed_from_step is not None:
                        current.resumed_from_step = progress.resumed_from_step
                    if progress.reached_before_resume is not None and attempt.number > 1:
                        before = r.attempts[attempt.number - 2]
                        before.final_step = max(before.final_step or 0, progress.reached_before_resume)
                    if progress.stage == BASE_TRAIN_STAGE and progress.step is not None:
                        current.final_step = progress.step

            record = self._update(note)
            if progress is not None and progress.stage == BASE_TRAIN_STAGE:  # not in `note`: it may run twice
                self.store.append_loss(self.job_id, progress)
            if not self.store.renew_supervision(self.job_id, self.worker, self.ttl_s):
                raise _Done  # another worker took over after we stalled; it owns the job now
            if not status.running:
                return status
            ending = self._reason_to_stop(record, attempt.number, last_activity)
            if ending is not None:
                if self._stop(backend, call_id):
                    return ending
                self._update(lambda r: setattr(r, "error", f"{ending.error}; stopping the call failed, retrying"))
            time.sleep(self.poll_s)

    @staticmethod
    def _reason_to_stop(record: JobRecord, number: int, last_activity: float) -> CallStatus | None:
        if record.cancel_requested:
            return CallStatus(Outcome.cancelled, "cancelled by request")
        started = record.attempts[number - 1].started_at
        if time.time() - started > record.spec.attempt_timeout_s:
            return CallStatus(Outcome.timed_out, f"attempt ran past its {record.spec.attempt_timeout_s}s timeout")
        if time.time() - last_activity > stall_timeout_s():
            return CallStatus(Outcome.stalled, f"no progress for {stall_timeout_s():.0f}s")
        return None

    @staticmethod
    def _stop(backend: Backend, call_id: str) -> bool:
        """Cancel the call; False if the backend could not be reached (the watch loop tries again)."""
        try:
            backend.cancel(call_id)
        except BackendError as exc:
            log.warning("cancel of %s failed: %s", call_id, exc)
            return False
        return True

    def _end_attempt(self, number: int, status: CallStatus) -> JobRecord:
        def end(r: JobRecord) -> None:
            attempt = r.attempts[number - 1]
            attempt.ended_at = time.time()
            attempt.outcome = status.outcome
            attempt.error = status.error
            if status.result is not None:
                if status.result.resumed_from_step is not None:
                    attempt.resumed_from_step = status.result.resumed_from_step
                if status.result.final_step is not None:
                    attempt.final_step = status.result.final_step
            if status.error:
                r.error = status.error

        return self._update(end)

    # -- record helpers --------------------------------------------------------------------------

    def _claim(self, r: JobRecord) -> None:
        r.worker = self.worker
        r.heartbeat_at = time.time()

    def _update(self, change) -> JobRecord:  # type: ignore[no-untyped-def]
        return self.store.update(self.job_id, change)

    def _finish(self, state: JobState, error: str | None) -> JobState:
        def end(r: JobRecord) -> None:
            r.state = state
            r.error = error if state != JobState.succeeded else None
            r.finished_at = time.time()
            r.cancel_requested = False

        record = self._update(end)
        notify(self.store.conn, record, state)  # the team's webhook, if it has one
        return state

    def _sleep_beating(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.store.renew_supervision(self.job_id, self.worker, self.ttl_s)
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))


class _Done(Exception):
    """The supervisor has already written the job's end (or handed it over)."""


# ---------------------------------------------------------------------------------------------
# The worker process.


def worker_queues(conn: redis.Redis, backends: Iterable[str]) -> list[Queue]:
    """The notify queue and every known team's queues; the worker refreshes this list before each
    dequeue (see fair_share.plan for the order it takes them in)."""
    store = Store(conn)
    current = plan(store.team_loads(store.team_names()), tuple(backends))
    return [Queue(name, connection=conn) for name in current.names]


class SpeedqWorker(FairDequeue):
    """An RQ worker that takes teams' jobs in turn (fair_share) and also re-homes jobs orphaned
    by dead workers, between jobs."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:
            reaper.reap(self.connection)
        except redis.RedisError as exc:
            self.log.warning("reaper skipped: %s", exc)


def run_worker(conn: redis.Redis, backends: list[str], burst: bool = False, name: str | None = None) -> bool:
    for backend in backends:
        backend_named(backend).check()  # fail at start, in one line, not on the first job
    reap_every = float(os.environ.get("SPEEDQ_REAP_INTERVAL", "20"))
    name = name or worker_name.default_name()  # readable in `status` and `rq info`
    worker_name.free_name(conn, name, say=log.warning)
    worker = SpeedqWorker(
        worker_queues(conn, backends),
        connection=conn,
        name=name,
        worker_ttl=int(reap_every) + 15,  # RQ blocks on the queue for worker_ttl - 15 s
        maintenance_interval=int(reap_every),
    )
    worker.speedq_backends = tuple(backends)
    worker.speedq_lease_s = heartbeat_ttl_s()
    # The scheduler (a child process) puts notification retries back on their queue when due.
    return worker.work(burst=burst, logging_level=os.environ.get("SPEEDQ_LOG_LEVEL", "INFO"), with_scheduler=True)
