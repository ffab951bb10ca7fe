"""What every part of a job's supervision stands on: the worker's lease on the job, the record's
writes (each refused once another worker holds the lease), and stopping a backend call for sure.
`speedq.worker.Supervisor` is built on it, with the launch path (worker_launch) between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from speedq import accounting, settings, supervision
from speedq.backends import Backend, BackendError, CallStatus
from speedq.notify import notify
from speedq.schemas import JobRecord, JobState
from speedq.store import Lease, LeaseLost, Store, TeamSpend
from speedq.supervision import Bounds

log = logging.getLogger("speedq.worker")


def heartbeat_ttl_s() -> float:
    """A job whose worker has not beaten for this long is taken over by another worker."""
    return settings.get().heartbeat_ttl


class SupervisorBase:
    """One worker's supervision of one job: its lease and its record writes."""

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

    # -- the backend's calls ----------------------------------------------------------------------

    def _announced(self, backend: Backend, record: JobRecord, number: int) -> str | None:
        try:
            return backend.announced(record, number)
        except BackendError as exc:
            log.warning("%s: reading attempt %d's announcement failed: %s", self.job_id, number, exc)
            return None

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
            raise Done from None

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
            raise Done

    def _sleep_beating(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._keep_lease()
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))


class Done(Exception):
    """The supervisor has already written the job's end (or handed it over)."""
