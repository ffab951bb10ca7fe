"""What `status`, `ls` and the dashboard show of a job."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
)

from speedq.schemas.protocol import Progress
from speedq.schemas.record import AttemptStatus, JobRecord, JobState, PreflightState


class JobStatus(BaseModel):
    """What any team may see of another team's job."""

    id: str
    team: str
    state: JobState
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def of(cls, record: JobRecord) -> JobStatus:
        return cls(
            id=record.id, team=record.spec.team, state=record.state, created_at=record.created_at,
            updated_at=record.updated_at, started_at=record.started_at, finished_at=record.finished_at,
        )


class LossPoint(BaseModel):
    """One point of a run's base-training loss curve (the store keeps a thinned history)."""

    step: int
    loss: float
    # When the run reported the step (the runner's clock, epoch seconds): the curve by wall time.
    # None on points stored before the store kept it.
    t: float | None = None


class JobOverview(JobStatus):
    """The dashboard's view of any team's job: status, progress (not sensitive) and attempts."""

    progress: Progress | None = None
    attempts: list[AttemptStatus] = Field(default_factory=list)
    max_attempts: int = 1
    round_start: int = 0
    preflight: PreflightState | None = None  # the one-GPU preflight's state, if one ran

    @classmethod
    def of(cls, record: JobRecord) -> JobOverview:
        return cls(
            **JobStatus.of(record).model_dump(),
            progress=record.progress,
            attempts=[AttemptStatus.of(a) for a in record.attempts],
            max_attempts=record.spec.max_attempts,
            round_start=record.round_start,
            preflight=record.preflight.state if record.preflight is not None else None,
        )


class JobPage(JobOverview):
    """One job's dashboard page: its overview and the loss curve so far."""

    loss: list[LossPoint] = Field(default_factory=list)


class TeamJobs(BaseModel):
    team: str
    jobs: dict[JobState, int]


class Board(BaseModel):
    """The dashboard's front page: counts by team and state, and the newest jobs."""

    teams: list[TeamJobs]
    jobs: list[JobOverview]


