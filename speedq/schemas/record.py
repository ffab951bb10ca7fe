"""What is stored: the job record in Redis and its parts."""

from __future__ import annotations

import time
from enum import Enum
from typing import Literal

from pydantic import (
    Field,
    computed_field,
)

from speedq.errors import JobNotFound
from speedq.schemas import repo as repos
from speedq.schemas.estimate import Estimate
from speedq.schemas.protocol import Outcome, Progress
from speedq.schemas.results import RunResults
from speedq.schemas.rules import STORED, BackendName, Schema
from speedq.schemas.spec import JobSpec


class JobState(str, Enum):
    queued = "queued"
    starting = "starting"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


ACTIVE_STATES = tuple(s for s in JobState if not s.terminal)


class LogPointer(Schema):
    """Where the run's log is, and the command a person would use to read it."""

    location: Literal["local", "modal-volume"]
    path: str
    volume: str | None = None
    command: str


class AttemptStatus(Schema):
    """What anyone may see of an attempt (the dashboard shows it without a token): when and how
    it ended and which steps it ran; not its call id, worker or error text."""

    number: int
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    outcome: Outcome | None = None
    resumed_from_step: int | None = None
    final_step: int | None = None
    preflight: bool = False  # the one-GPU preflight of a multi-GPU run, in its own directory

    @computed_field  # type: ignore[prop-decorator]
    @property
    def steps_run(self) -> int:
        if self.final_step is None:
            return 0
        return max(0, self.final_step - (self.resumed_from_step or 0))

    @classmethod
    def of(cls, attempt: AttemptStatus) -> AttemptStatus:
        return cls.model_validate(attempt.model_dump(include=set(cls.model_fields)))


class Attempt(AttemptStatus):
    backend: BackendName
    call_id: str | None = None
    worker: str | None = None
    error: str | None = None
    gpu_count: int = 1

    @property
    def gpu_seconds(self) -> float:
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at) * self.gpu_count


class PreflightState(str, Enum):
    running = "running"  # launched (or being retried after a preemption)
    passed = "passed"  # the full run may launch
    failed = "failed"  # the job failed with the preflight's error; the full run never launched
    cancelled = "cancelled"


class PreflightStatus(Schema):
    """A multi-GPU full run's preflight: the same commit and options briefly on one GPU, evals off,
    in the run directory's `preflight/` (never the full run's checkpoints). Its attempts are in
    `JobRecord.attempts` (flagged `preflight`), so they are fenced, leased, cancelled, reattached
    and counted in GPU-hours like any attempt; this is its summary."""

    state: PreflightState = PreflightState.running
    steps: int
    gpu: str  # e.g. H100:1
    commit: str | None = None  # what it ran; a pass holds for this commit and the (immutable) spec
    log: LogPointer | None = None
    error: str | None = None  # its attempt's error line, when it failed
    final_step: int | None = None


class JobRecord(Schema):
    id: str
    spec: JobSpec
    state: JobState = JobState.queued
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    progress: Progress | None = None
    results: RunResults | None = None  # set when the job succeeds
    estimate: Estimate | None = None  # set at submit; held against the team's budget until the job ends
    preflight: PreflightStatus | None = None  # None: none has run (or none is wanted)
    nanochat_commit: str | None = None
    run_dir: str | None = None
    log: LogPointer | None = None
    error: str | None = None
    worker: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False
    rq_job_id: str | None = None  # the RQ job now carrying this speedq job
    round_start: int = 0  # attempts before this index belong to runs before the last `retry`
    queued_at: float | None = None  # when the last `retry` queued it again (None: created_at)

    @classmethod
    def stored(cls, job_id: str, raw: bytes | str | None) -> JobRecord:
        """The record as read from its key (None: there is no such job)."""
        if raw is None:
            raise JobNotFound(f"no job {job_id}")
        return cls.from_key(raw)

    @classmethod
    def from_key(cls, raw: bytes | str) -> JobRecord:
        """A record's key parsed: held to its types, not to limits added since it was stored."""
        return cls.model_validate_json(raw, context=STORED)

    def as_stored(self) -> str:
        """The record as its key holds it: without the computed fields, which every reader computes
        again. One of them, gpu_seconds, moves with the clock while an attempt runs; stored, it
        made every write decided from the record last written find the key changed, and go twice."""
        return self.model_dump_json(exclude_computed_fields=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gpu_seconds(self) -> float:
        return sum(a.gpu_seconds for a in self.attempts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def preflight_gpu_seconds(self) -> float:
        """The part of gpu_seconds that the preflight's attempts took."""
        return sum(a.gpu_seconds for a in self.attempts if a.preflight)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def in_preflight(self) -> bool:
        """Running (or about to retry) the preflight: the full run has not launched."""
        return (not self.state.terminal and self.preflight is not None
                and self.preflight.state is PreflightState.running)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def steps_recomputed(self) -> int:
        """Base-training steps run again because a fault lost them (0 for a clean run)."""
        total, furthest = 0, 0
        for attempt in self.attempts:
            if attempt.final_step is None or attempt.preflight:
                continue
            resumed = attempt.resumed_from_step or 0
            total += max(0, min(furthest, attempt.final_step) - resumed)
            furthest = max(furthest, attempt.final_step)
        return total

    @property
    def source(self) -> str:
        """`owner/repo@abcdef1`: the repository and the commit the ref was pinned to (the ref
        itself until the first attempt pins it; a commit id, short)."""
        return repos.source_text(self.spec.repo, self.nanochat_commit or self.spec.repo_ref)

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def is_preflight(self, number: int | None = None) -> bool:
        """Whether attempt `number` (default: the current one) is a preflight."""
        if number is None:
            return self.current_attempt is not None and self.current_attempt.preflight
        return 0 < number <= len(self.attempts) and self.attempts[number - 1].preflight

    @property
    def attempts_this_round(self) -> int:
        """The full run's attempts since the last `retry` (spec.max_attempts bounds them)."""
        return sum(1 for a in self.attempts[self.round_start:] if not a.preflight)

    @property
    def preflights_this_round(self) -> int:
        """The preflight's attempts since the last `retry` (spec.max_attempts bounds them too)."""
        return sum(1 for a in self.attempts[self.round_start:] if a.preflight)


class Submitted(Schema):
    """What a submit did: `created` False means an active job already held this run, and `job`
    is that one (nothing new was queued)."""

    created: bool
    job: JobRecord


