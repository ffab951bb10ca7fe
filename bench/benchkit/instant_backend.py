"""A backend for benchmarks only: every call returns at once, and `launch` puts the moment it
was called into the call id it returns, so the job record carries it back to the bench.

The sim backend's launch is too heavy to time the queue with: it checks out nanochat with git
and starts a runner process per attempt, which on two cores slows the next sample.
"""

from __future__ import annotations

import sys
import time

from speedq.backends.base import CallStatus
from speedq.schemas import JobRecord, LogPointer, Outcome, Progress

COMMIT = "0" * 40


class InstantBackend:
    name = "sim"
    prepares_data = False  # as the sim's

    def check(self) -> None:
        pass

    def resolve_ref(self, ref: str, repo: str = "") -> str:
        return COMMIT

    def run_dir(self, record: JobRecord) -> str:
        return f"/nonexistent/{record.spec.run_key}"

    def prepare(self, record: JobRecord) -> None:
        pass  # no data to make ready

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        return None  # launches never go unanswered here

    def launch(self, record: JobRecord, attempt: int) -> str:
        return f"instant@{time.time()!r}"

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        return CallStatus(Outcome.succeeded)

    def cancel(self, call_id: str) -> None:
        pass

    def read_progress(self, record: JobRecord) -> Progress | None:
        return None

    def read_log(self, record: JobRecord, tail: int | None = None) -> str:
        return ""

    def log_pointer(self, record: JobRecord) -> LogPointer:
        return LogPointer(location="local", path=self.run_dir(record), command="true")


def launched_at(call_id: str) -> float:
    return float(call_id.removeprefix("instant@"))


def run_speedq_worker() -> None:
    """`speedq worker --backend sim` with this backend in the sim's place (worker and work horse)."""
    import speedq.worker
    from speedq.entry import main

    speedq.worker.backend_named = lambda name: InstantBackend()
    main(["worker", "--backend", "sim", *sys.argv[1:]])


if __name__ == "__main__":
    run_speedq_worker()
