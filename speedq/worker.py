"""The worker: an RQ job function that supervises one speedrun from launch to end.

RQ delivers a job at least once and may deliver it twice (see rq-facts), so `supervise` is
idempotent: a Redis lease proves which worker holds a job, an attempt's backend call id is
stored the moment the backend returns it, and a worker that finds a live call id reattaches
to it instead of launching again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import cache

from redis.exceptions import LockError, RedisError
from rq import get_current_job

from speedq import accounting, config, settings, supervision
from speedq.backends import Backend, BackendError, CallStatus, LaunchUnknown, get_backend
from speedq.keys import Keys
from speedq.notify import notify
from speedq.producer import over_budget_now
from speedq.schemas import Attempt, JobRecord, JobState, Outcome, Progress
from speedq.store import JobNotFound, Lease, LeaseLost, Store, TeamSpend
from speedq.supervision import Adopt, Bounds, FenceOff, Finish, Kind, Launch, Reconcile, Retry, Watch

log = logging.getLogger("speedq.worker")


def heartbeat_ttl_s() -> float:
    """A job whose worker has not beaten for this long is taken over by another worker."""
    return settings.get().heartbeat_ttl


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
    from speedq.schemas import Attempt, JobRecord, LogPointer, PriceTable, Progress, RunResults, RunSample, TeamSettings

    for model in (JobRecord, Attempt, LogPointer, Progress, TeamSettings, PriceTable, RunResults, RunSample):
        model.model_rebuild()


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
    """The thin I/O loop around speedq.supervision's decisions."""

    def __init__(self, store: Store, job_id: str, worker: str) -> None:
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.poll_s = settings.get().poll_interval
        self.ttl_s = heartbeat_ttl_s()
        self.bounds = Bounds.from_settings()
        # The team's spend as read with the lease: a first launch right after checks the budget
        # against it instead of reading it again; anything done before drops it.
        self.spend: TeamSpend | None = None

    # -- the whole job ---------------------------------------------------------------------------

    def run(self) -> str:
        holder, record, self.spend = self.store.acquire_reading(self.job_id, self.worker, self.ttl_s)
        if holder is not None:
            return f"supervised by {holder}"
        if record is None or record.state.terminal:
            self._free_running_slot()  # e.g. cancelled while this worker was taking it
            self.store.release_supervision(self.job_id, self.worker)  # the lease taken at the pop
            return record.state.value if record is not None else "missing"
        keep_lease = False
        try:
            return self._supervise(record).value
        except _Done:
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

    # -- launching -------------------------------------------------------------------------------

    def _launch(self, backend: Backend, record: JobRecord, preflight: bool = False) -> JobRecord:
        """Start a new attempt (the preflight's, or the job's own run) once the previous one has
        surely ended; the call id is stored the moment the backend returns it. Returns the record
        as last written."""
        spend, self.spend = self.spend, None  # read with the lease, or stale by now: once at most
        if record.attempts_this_round == 0 and (why := over_budget_now(self.store, record.spec.team, spend)):
            self._finish(JobState.failed, why)  # the budget was lowered since the submit reserved it
            raise _Done
        commit = record.nanochat_commit
        if commit is None:  # no attempt has begun yet, so none can be running
            try:
                commit = backend.resolve_ref(record.spec.repo_ref, record.spec.repo)
            except BackendError as exc:
                self._finish(JobState.failed, str(exc))
                raise _Done from None

        def starting(r: JobRecord) -> None:
            self._claim(r)
            r.state = JobState.starting
            r.nanochat_commit = r.nanochat_commit or commit

        record = self._update(starting, seen=record, lease=True)
        self._end_previous(backend, record)
        self._prepare(backend, record)
        number = len(record.attempts) + 1

        def begin(r: JobRecord) -> None:
            r.attempts.append(Attempt(number=number, backend=r.spec.backend, worker=self.worker,
                                      gpu_count=1 if preflight else r.spec.gpu.count, preflight=preflight))
            r.run_dir = backend.run_dir(r)
            r.log = backend.log_pointer(r)  # the new attempt's: a preflight logs in its own directory
            if preflight:
                r.preflight = supervision.begin_preflight(r, config.PREFLIGHT_STEPS)
                r.preflight.log = r.log
            r.started_at = r.started_at or time.time()

        record = self._update(begin, seen=record, lease=True)  # nothing launched if another worker took the job
        try:
            call_id = backend.launch(record, number)
        except LaunchUnknown as exc:
            # The call may be running: the next turn of the loop reconciles it through its
            # announcement instead of writing it off.
            self._note_error(f"launch outcome unknown, reconciling: {exc}")
            return self.store.get(self.job_id)
        except BackendError as exc:
            self._end_attempt(number, CallStatus(Outcome.launch_failed, str(exc)))
            self._finish(JobState.failed, str(exc))
            raise _Done from None
        if settings.get().test_kill_after_launch:
            _die_with_worker()

        def started(r: JobRecord) -> None:
            r.attempts[number - 1].call_id = call_id
            r.state = JobState.running

        return self._update(started, seen=record)

    def _end_previous(self, backend: Backend, record: JobRecord) -> None:
        """Before a new attempt, the previous call is confirmed ended, or cancelled and then
        confirmed, or `stop_confirm_s` passes (its runner then meets the new attempt's claim)."""
        previous = record.current_attempt
        if previous is None:
            return
        call_id = previous.call_id or self._announced(backend, record, previous.number)
        if call_id is None:
            return
        try:
            if not backend.poll(record, call_id).running:
                return
        except BackendError:
            pass  # unknown: stop it to be sure
        if not self._stop(backend, record, call_id):
            self._update(lambda r: setattr(
                r, "error",
                f"attempt {previous.number} not confirmed ended after {self.bounds.stop_confirm_s:.0f}s; "
                "the run-dir fence supersedes it",
            ))

    def _prepare(self, backend: Backend, record: JobRecord) -> None:
        """backend.prepare under a Redis lock keyed by (commit, shard count), so workers never
        prepare the same data at once; the lease is renewed all the while."""
        lock = self.store.conn.lock(_prepare_lock_key(record), timeout=max(10.0, 3 * self.ttl_s))
        waited_since = time.monotonic()
        while not lock.acquire(blocking=False):
            self._keep_lease()
            if time.monotonic() - waited_since > 5 * self.poll_s:
                self._update(lambda r: setattr(r, "error", "waiting for another worker preparing the same data"))
                waited_since = float("inf")
            time.sleep(self.poll_s)
        failure: list[BaseException] = []

        def prepare() -> None:
            try:
                backend.prepare(record)
            except BaseException as exc:  # noqa: BLE001 - reported below, in this thread
                failure.append(exc)

        try:
            worker = threading.Thread(target=prepare, daemon=True, name=f"prepare-{self.job_id}")
            worker.start()
            worker.join(self.poll_s)
            while worker.is_alive():  # a prepare done within a poll (data already there) costs no renewal
                self._keep_lease()
                try:
                    lock.reacquire()
                except LockError:
                    log.warning("%s: the data lock expired while preparing", self.job_id)
                worker.join(self.poll_s)
        finally:
            try:
                lock.release()
            except LockError:
                pass  # it expired while we waited on a hung prepare: nothing to release
        if failure:
            exc = failure[0]
            if not isinstance(exc, BackendError):
                raise exc
            self._finish(JobState.failed, f"data preparation failed: {exc}")
            raise _Done

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

    def _announced(self, backend: Backend, record: JobRecord, number: int) -> str | None:
        try:
            return backend.announced(record, number)
        except BackendError as exc:
            log.warning("%s: reading attempt %d's announcement failed: %s", self.job_id, number, exc)
            return None

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

    def _stop(self, backend: Backend, record: JobRecord, call_id: str) -> bool:
        """Cancel the call, then poll until it has ended: True once confirmed, False if
        `stop_confirm_s` passes first. Failed cancels and polls are tried again meanwhile."""
        deadline = time.monotonic() + self.bounds.stop_confirm_s
        cancelled = False
        while True:
            if not cancelled:
                try:
                    backend.cancel(call_id)
                    cancelled = True
                except BackendError as exc:
                    log.warning("cancel of %s failed (will retry): %s", call_id, exc)
            if cancelled:
                try:
                    if not backend.poll(record, call_id).running:
                        return True
                except BackendError as exc:
                    log.warning("poll of cancelled %s failed (will retry): %s", call_id, exc)
            if time.monotonic() >= deadline:
                log.warning("%s: call %s not confirmed ended after %.0fs",
                            self.job_id, call_id, self.bounds.stop_confirm_s)
                return False
            self._keep_lease()
            time.sleep(self.poll_s)

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
            supervision.end_preflight(r, number, status)

        return self._update(end)

    # -- record helpers --------------------------------------------------------------------------

    def _claim(self, r: JobRecord) -> None:
        r.worker = self.worker
        r.heartbeat_at = time.time()

    def _update(self, change: Callable[[JobRecord], object], seen: JobRecord | None = None, lease: bool = False
                ) -> JobRecord:
        """`seen` (the record as last read or written here) saves a read; `lease`: write only while holding it."""
        held = Lease(self.worker, self.ttl_s) if lease else None
        try:
            return self.store.update(self.job_id, change, seen=seen, lease=held)
        except LeaseLost:
            log.warning("%s: lease lost to another worker; stopping", self.job_id)
            raise _Done from None

    def _note_error(self, message: str) -> None:
        def note(r: JobRecord) -> None:
            r.error = message

        self._update(note)

    def _finish(self, state: JobState, error: str | None) -> JobState:
        table = accounting.prices()

        def end(r: JobRecord) -> None:
            r.state = state
            r.error = error if state != JobState.succeeded else None
            r.results = accounting.run_results(r, table) if state == JobState.succeeded else None
            r.finished_at = time.time()
            r.cancel_requested = False

        record = self._update(end)
        notify(self.store.conn, record, state)  # the team's webhook, if it has one
        return state

    def _keep_lease(self) -> None:
        """Renew the lease, or stop at once: another worker owns the job now."""
        if not self.store.renew_supervision(self.job_id, self.worker, self.ttl_s):
            log.warning("%s: lease lost to another worker; stopping", self.job_id)
            raise _Done

    def _sleep_beating(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._keep_lease()
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))


def _die_with_worker() -> None:
    """Tests only: SIGKILL the whole worker (the RQ worker, its scheduler and this work horse,
    which RQ starts in a session of its own), as a machine dying in the launch window would."""
    if get_current_job() is not None:  # in a work horse: the RQ worker is the parent
        os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _prepare_lock_key(record: JobRecord) -> str:
    from speedq.gpu import nanochat  # nanochat's shard rule, sized as the runner sizes it

    spec = record.spec
    size = nanochat.size_run(spec.depth, spec.mode, spec.gpu.type, spec.gpu.count, spec.train_args)
    return Keys.data_prep(record.nanochat_commit or spec.repo_ref, nanochat.shards_needed(size, spec.mode))


class _Done(Exception):
    """The supervisor has already written the job's end (or handed it over)."""
