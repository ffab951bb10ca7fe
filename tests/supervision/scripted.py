"""A backend whose calls follow a test's script, and the loop run over it in-process: the
supervision tests drive the real worker loop against a real Redis with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from speedq import worker
from speedq.backends.base import CallStatus
from speedq.schemas import JobRecord, JobSpec, LogPointer, Outcome
from speedq.store import Store


@dataclass
class Scripted:
    """A backend whose calls follow the test's script; `calls` records what the loop did."""

    name: str = "sim"
    prepares_data: bool = True  # as Modal's: `prepare` runs under the data lock
    calls: list[tuple[str, ...]] = field(default_factory=list)
    launch_script: list[Callable[[int], str]] = field(default_factory=list)
    poll_script: Callable[[str, int], CallStatus] = lambda call_id, n: CallStatus(Outcome.succeeded)
    announce_script: Callable[[int, int], str | None] = lambda attempt, n: None
    ended: set[str] = field(default_factory=set)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c[0] == kind)

    def resolve_ref(self, ref: str, repo: str = "") -> str:
        return "c" * 40

    def run_dir(self, record: JobRecord) -> str:
        return "/nowhere/run"

    def log_pointer(self, record: JobRecord) -> LogPointer:
        return LogPointer(location="local", path="/nowhere/log.txt", command="true")

    def prepare(self, record: JobRecord) -> None:
        self.calls.append(("prepare",))

    def launch(self, record: JobRecord, attempt: int) -> str:
        self.calls.append(("launch", str(attempt)))
        return self.launch_script.pop(0)(attempt) if self.launch_script else f"call-{attempt}"

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        self.calls.append(("announced", str(attempt)))
        return self.announce_script(attempt, self.count("announced"))

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        self.calls.append(("poll", call_id))
        if call_id in self.ended:
            return CallStatus(Outcome.cancelled, "ended by cancel")
        return self.poll_script(call_id, self.count("poll"))

    def cancel(self, call_id: str) -> None:
        self.calls.append(("cancel", call_id))
        self.ended.add(call_id)

    def read_progress(self, record: JobRecord):
        return None


def supervise(store: Store, backend: Scripted, monkeypatch: pytest.MonkeyPatch, **spec: object) -> JobRecord:
    spec.setdefault("preflight", False)  # these scripts are of the full run's calls; preflights below
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim", **spec))
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    worker.Supervisor(store, record.id, "w1").run()
    return store.get(record.id)
