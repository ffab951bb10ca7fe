"""The backend interface: how a worker launches, watches and stops one attempt of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from speedq import config
from speedq.errors import BackendError
from speedq.schemas import JobRecord, LogPointer, Outcome, Progress, RunRequest, RunResult

__all__ = ["Backend", "BackendError", "CallStatus", "LaunchUnknown", "for_attempt"]


def for_attempt(record: JobRecord, attempt: int, run: RunRequest) -> RunRequest:
    """The request attempt `attempt` gets: `run` (the job's own), or its one-GPU preflight when the
    attempt is one. Every backend builds its requests through this, so all run the same preflight."""
    if not record.is_preflight(attempt) or record.preflight is None:
        return run
    from speedq.gpu.plan import preflight_request

    return preflight_request(run, record.preflight.steps)


class LaunchUnknown(BackendError):
    """A launch whose outcome cannot be known (the spawn's answer was slow or lost): the call may
    be running. The supervisor reconciles it through `announced`, never writes it off."""


@dataclass(frozen=True)
class CallStatus:
    """What a poll found: still running (outcome None) or ended, and how."""

    outcome: Outcome | None = None
    error: str | None = None
    result: RunResult | None = None

    @property
    def running(self) -> bool:
        return self.outcome is None


class Backend(Protocol):
    name: str
    # Whether `prepare` has anything to do. False (local, sim: the runner prepares the data under
    # a local flock): the supervisor neither calls it nor takes the data lock's two round trips.
    prepares_data: bool

    def check(self) -> None:
        """Raise BackendError at worker start if this backend cannot work here."""

    def resolve_ref(self, ref: str, repo: str = config.NANOCHAT_REPO_URL) -> str:
        """Pin a branch, tag or commit of `repo` (a job's spec.repo) to a full commit id."""

    def run_dir(self, record: JobRecord) -> str:
        """Where this job's run directory is, as the backend names it."""

    def prepare(self, record: JobRecord) -> None:
        """Make the shared data ready before any GPU launch (the supervisor holds a Redis lock
        keyed by commit and shard count around it). Modal runs its CPU prepare function to
        completion; local and sim do nothing (`prepares_data` is False: it is never called)."""

    def launch(self, record: JobRecord, attempt: int) -> str:
        """Start one attempt and return its call id at once (the run goes on without us).
        Raises LaunchUnknown when the call may have started but its id never came back."""

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        """The call id that attempt's runner announced in its run dir (its first act), or None.
        A preflight attempt's run dir is the run's `preflight/`; so for progress, log and pointer,
        which follow the current attempt."""

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        """Never blocks. Only the call's own result is an outcome; any transport error raises
        BackendError."""

    def cancel(self, call_id: str) -> None:
        """Request termination of the call and its containers or processes (Modal:
        terminate_containers=True). The supervisor then polls until the call has ended."""

    def read_progress(self, record: JobRecord) -> Progress | None:
        """The run's progress.json, or None if there is none yet or it is unreadable."""

    def read_log(self, record: JobRecord, tail: int | None = None) -> str:
        """The run's log.txt (the last `tail` lines), '' if there is none yet."""

    def log_pointer(self, record: JobRecord) -> LogPointer:
        """Where the log is and the command to read it."""
