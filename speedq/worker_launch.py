"""The launch path: from a job's claim to the backend's `launch`, each step before it guarded.

A new attempt starts only once the previous one has surely ended (confirmed by a poll, or
cancelled and confirmed, or fenced off), only while no other live worker holds the job's lease
(every write before the launch checks it; a lapsed lease is taken back), only if no attempt was
begun since the record it was decided from, and its call id is stored the moment the backend
returns it.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import LockError
from rq import get_current_job

from speedq import config, settings, supervision
from speedq.backends import Backend, BackendError, CallStatus, LaunchUnknown
from speedq.keys import Keys
from speedq.producer import over_budget_now
from speedq.schemas import Attempt, JobRecord, JobState, Outcome
from speedq.threads import Overran, in_thread
from speedq.worker_base import Done, SupervisorBase, log

T = TypeVar("T")


class _Overtaken(Exception):
    """The stored record has an attempt this launch did not see: the loop decides again from it
    (watch it, reconcile it, or end it before any new one)."""


class Launching(SupervisorBase):
    """Supervisor's launch of one attempt (see the module docstring)."""

    def _launch(self, backend: Backend, record: JobRecord, preflight: bool = False) -> JobRecord:
        """Start a new attempt (the preflight's, or the job's own run) once the previous one has
        surely ended; the call id is stored the moment the backend returns it. Returns the record
        as last written."""
        spend, self.spend = self.spend, None  # read with the lease, or stale by now: once at most
        if record.attempts_this_round == 0 and (why := over_budget_now(self.store, record.spec.team, spend)):
            self._finish(JobState.failed, why)  # the budget was lowered since the submit reserved it
            raise Done
        commit = record.nanochat_commit
        if commit is None:  # no attempt has begun yet, so none can be running
            try:
                commit = self._beating(lambda: backend.resolve_ref(record.spec.repo_ref, record.spec.repo),
                                       limit_s=config.RESOLVE_TIMEOUT_S,
                                       what=f"pinning nanochat ref {record.spec.repo_ref!r}")
            except BackendError as exc:
                self._finish(JobState.failed, str(exc))
                raise Done from None

        seen_attempts = len(record.attempts)

        def starting(r: JobRecord) -> None:
            if r.state.terminal:
                raise Done  # cancelled since it was read (a write may re-run on a newer record)
            if len(r.attempts) != seen_attempts:
                raise _Overtaken  # another worker began an attempt since `record` was read
            self._claim(r)
            r.state = JobState.starting
            r.nanochat_commit = r.nanochat_commit or commit

        number = seen_attempts + 1
        mine: list[Attempt] = []

        def begin(r: JobRecord) -> None:
            if mine and r.attempts[-1:] == mine:
                # This write was applied and its answer lost; redis-py sent it again and met the
                # record it wrote itself. The attempt is this worker's own: nothing to add.
                if r.state.terminal:
                    raise Done
                return
            starting(r)
            mine[:] = [Attempt(number=number, backend=r.spec.backend, worker=self.worker,
                               gpu_count=1 if preflight else r.spec.gpu.count, preflight=preflight)]
            r.attempts.append(mine[0])
            r.run_dir = backend.run_dir(r)
            r.log = backend.log_pointer(r)  # the new attempt's: a preflight logs in its own directory
            if preflight:
                r.preflight = supervision.begin_preflight(r, config.PREFLIGHT_STEPS)
                r.preflight.log = r.log
            r.started_at = r.started_at or time.time()

        try:
            if record.current_attempt is not None or backend.prepares_data:
                # Something to wait for before the attempt (a previous call to see ended, shared
                # data to prepare): the job shows as starting meanwhile. Else the attempt's write
                # claims it.
                record = self._update(starting, seen=record, lease=True)
                self._end_previous(backend, record)
                if backend.prepares_data:
                    self._prepare(backend, record)
            # Nothing launched if another live worker holds the job, or began an attempt since
            # (its lease may have lapsed by now: a lapsed lease is taken back, an attempt is not).
            record = self._update(begin, seen=record, lease=True)
        except _Overtaken:
            log.warning("%s: attempt %d was begun by another worker; deciding again", self.job_id, number)
            return self.store.get(self.job_id)
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
            raise Done from None
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
        prepare the same data at once; the lease is renewed all the while. Only for a backend
        that `prepares_data`: local and sim runners prepare theirs under a local flock."""
        lock = self.store.conn.lock(_prepare_lock_key(record), timeout=max(10.0, 3 * self.ttl_s))
        waited_since = time.monotonic()
        while not lock.acquire(blocking=False):
            self._keep_lease()
            if time.monotonic() - waited_since > 5 * self.poll_s:
                self._update(lambda r: setattr(r, "error", "waiting for another worker preparing the same data"))
                waited_since = float("inf")
            time.sleep(self.poll_s)

        def keep_lock() -> None:
            try:
                lock.reacquire()
            except LockError:
                log.warning("%s: the data lock expired while preparing", self.job_id)

        try:
            self._beating(lambda: backend.prepare(record), also=keep_lock)
        except BackendError as exc:
            self._finish(JobState.failed, f"data preparation failed: {exc}")
            raise Done from None
        finally:
            try:
                lock.release()
            except LockError:
                pass  # it expired while we waited on a hung prepare: nothing to release

    def _beating(self, work: Callable[[], T], also: Callable[[], None] = lambda: None,
                 limit_s: float = math.inf, what: str = "") -> T:
        """`work` in a thread while this one renews the lease (and does `also`) a few times a
        lease, so a slow step before the launch does not let the reaper hand the job to another
        worker. Raises what `work` raised, or BackendError past `limit_s`; stops with Done if the
        lease is lost. Either way a hung `work` is left behind, to end with the work horse."""

        def beat() -> None:
            self._keep_lease()
            also()

        try:
            return in_thread(work, limit_s, every=self.ttl_s / 3, meanwhile=beat)
        except Overran:
            raise BackendError(f"{what} took over {limit_s:g}s") from None


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
