"""The worker: an RQ job function that supervises one speedrun from launch to end.

RQ delivers a job at least once and may deliver it twice (see rq-facts), so `supervise` is
idempotent: a Redis lease proves which worker holds a job, an attempt's backend call id is
stored the moment the backend returns it, and a worker that finds a live call id reattaches
to it instead of launching again.
"""

from __future__ import annotations

import logging
import time
from functools import cache

from redis.exceptions import RedisError
from rq import get_current_job

from speedq import handoff, settings, supervision, worker_name
from speedq.backends import Backend, BackendError, CallStatus, get_backend
from speedq.notify import notify
from speedq.schemas import JobRecord, JobState, Outcome, Progress
from speedq.store import JobNotFound, Store
from speedq.supervision import Adopt, FenceOff, Finish, Kind, Launch, Reconcile, Retry, Watch
from speedq.worker_base import Done
from speedq.worker_launch import Launching

log = logging.getLogger("speedq.worker")


def retry_backoff_s(attempts_done: int) -> float:
    base = settings.get().retry_backoff
    return min(300.0, base * 2.0 ** max(0, attempts_done - 1))


@cache
def backend_named(name: str) -> Backend:
    # One instance per process, so the local backend can reap the children it started.
    return get_backend(name)


def build_job_models() -> None:
    """Build the validators and serializers of the models every job's supervision uses, in the
    worker before it forks its work horses. Schemas are built on first use (schemas.rules.Schema),
    and a work horse is a fork that ends with its job: what it builds dies with it, so a model
    first used in the horse was built again for every job, about 20 ms before each launch."""
    from speedq import schemas as s

    for model in (s.JobRecord, s.Attempt, s.LogPointer, s.PreflightStatus, s.Progress, s.TeamSettings, s.PriceTable,
                  s.RunResults, s.RunSample):
        model.model_rebuild()


def _worker_name() -> str:
    job = get_current_job()
    if job is not None and job.worker_name:
        return job.worker_name
    return worker_name.process_name()  # supervised outside an RQ worker: the same name at every call


def supervise(job_id: str) -> str:
    """RQ entry point. Returns the job's final state (or why it was left alone)."""
    job = get_current_job()
    conn = job.connection if job is not None else None
    if conn is None:
        from speedq.connection import connect

        conn = connect()
    return Supervisor(Store(conn), job_id, _worker_name()).run()


class Supervisor(Launching):
    """The thin I/O loop around speedq.supervision's decisions."""

    # -- the whole job ---------------------------------------------------------------------------

    def run(self) -> str:
        # The worker's pop read it all just before forking this work horse, if it popped it.
        holder, record, self.spend = (handoff.take(self.job_id)
                                      or self.store.acquire_reading(self.job_id, self.worker, self.ttl_s))
        if holder is not None:
            # The pop took the job's slot again if it had been freed (its lease had lapsed and the
            # reaper re-queued it); the slot goes back if the holder has ended the job since.
            self._free_running_slot()
            return f"supervised by {holder}"
        if record is None or record.state.terminal:
            self._free_running_slot()  # e.g. cancelled while this worker was taking it
            self.store.release_supervision(self.job_id, self.worker)  # the lease taken at the pop
            return record.state.value if record is not None else "missing"
        keep_lease = False
        try:
            return self._supervise(record).value
        except Done:
            return self.store.get(self.job_id).state.value
        except Exception as exc:
            keep_lease = not self._fail_if_idle(exc)
            raise  # RQ keeps the traceback with its job
        finally:
            # The slot first: a worker dying in between leaves a lease that expires, and the
            # reaper frees the slot of a job that ended.
            self._free_running_slot()
            if not keep_lease:
                self.store.release_supervision(self.job_id, self.worker)

    def _fail_if_idle(self, exc: Exception) -> bool:
        """A fault in speedq itself: a job with no attempt in flight fails with it in one line,
        rather than stay queued with nobody on it. With an attempt in flight (or Redis gone) the
        lease is kept to expire, as if this worker had died: the reaper hands the job to another
        worker, which reattaches to the call rather than pay for a second one."""
        if isinstance(exc, RedisError):
            return False
        try:
            attempt = self.store.get(self.job_id).current_attempt
            if attempt is not None and attempt.outcome is None:
                return False
            self._finish(JobState.failed, f"speedq failed before a launch: {type(exc).__name__}: {exc}")
            return True
        except Exception:
            log.exception("%s: could not record the failure", self.job_id)
            return False

    def _free_running_slot(self) -> None:
        """The team's running slot (taken at dequeue) goes back once the job has ended; a job
        handed to another worker keeps it, since the slot belongs to the job."""
        try:
            record = self.store.get(self.job_id)
        except JobNotFound:
            return
        if record.state.terminal:
            self.store.release_slot(record.spec.team, self.job_id)

    def _supervise(self, record: JobRecord) -> JobState:
        try:
            backend = backend_named(record.spec.backend)
        except BackendError as exc:
            return self._finish(JobState.failed, str(exc))
        if supervision.next_step(record).kind is not Kind.launch:
            self.spend = None  # a reattach may watch a preflight for minutes before the run's launch
            record = self._update(self._claim, seen=record)  # a launch claims the job in its first write
        while True:
            step = supervision.next_step(record)
            if isinstance(step, Finish):
                return self._finish(step.state, step.error)
            if isinstance(step, Launch):
                record = self._launch(backend, record, step.preflight)
                continue
            if isinstance(step, Reconcile):
                self._reconcile(backend, record, step.attempt)
                record = self.store.get(self.job_id)
                continue
            status = self._watch(backend, step.attempt, step.call_id)
            record = self._end_attempt(step.attempt, status)
            then = supervision.after_attempt(record, status)
            if isinstance(then, Finish):
                return self._finish(then.state, then.error)
            if isinstance(then, Retry):
                record = self._update(lambda r: setattr(r, "state", JobState.retrying))
                notify(self.store.conn, record, JobState.retrying)
                self._sleep_beating(retry_backoff_s(record.attempts_this_round))
                record = self.store.get(self.job_id)

    # -- an attempt whose launch was never confirmed ---------------------------------------------

    def _reconcile(self, backend: Backend, record: JobRecord, number: int) -> None:
        attempt = record.attempts[number - 1]
        step = supervision.reconcile(attempt, self._announced(backend, record, number), time.time(), self.bounds)
        if isinstance(step, Adopt):
            call_id = step.call_id
            log.warning("%s: adopting attempt %d's call %s from its announcement", self.job_id, number, call_id)

            def adopt(r: JobRecord) -> None:
                r.attempts[number - 1].call_id = call_id
                r.state = JobState.running

            self._update(adopt)
        elif isinstance(step, FenceOff):
            self._end_attempt(number, CallStatus(Outcome.lost, step.error))
        else:
            self._sleep_beating(self.poll_s)

    # -- one attempt -----------------------------------------------------------------------------

    def _watch(self, backend: Backend, number: int, call_id: str) -> CallStatus:
        """Poll the call until it ends (or must be stopped), writing progress and heartbeats back."""
        watch = Watch(last_activity=time.time())
        while True:
            record = self.store.get(self.job_id)
            try:
                status: CallStatus | None = backend.poll(record, call_id)
            except BackendError as exc:
                status = None  # a flaky API is not the run failing: keep watching, up to a bound
                self._note_error(f"poll failed (will retry): {exc}")
            progress = backend.read_progress(record)
            watch = supervision.observe(watch, status is not None, progress, time.time())

            def note(r: JobRecord, progress: Progress | None = progress) -> None:
                r.heartbeat_at = time.time()
                r.worker = self.worker
                if r.state in (JobState.starting, JobState.retrying):
                    r.state = JobState.running
                supervision.note_progress(r, number, progress)

            record = self._update(note)
            # not in `note`: the store may run `note` twice; a preflight's steps are not the run's curve
            if (progress is not None and progress.stage == supervision.BASE_TRAIN_STAGE
                    and not record.is_preflight(number)):
                self.store.append_loss(self.job_id, progress)
            self._keep_lease()
            judged = supervision.verdict(record, number, status, watch, time.time(), self.bounds)
            if judged.status is not None:
                if judged.stop and not self._stop(backend, record, call_id):
                    ending = judged.status
                    return CallStatus(ending.outcome, f"{ending.error}; not confirmed ended after "
                                      f"{self.bounds.stop_confirm_s:.0f}s (the run-dir fence supersedes it)")
                return judged.status
            time.sleep(self.poll_s)
