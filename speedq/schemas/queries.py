"""What a user asks for: listing filters, job references, entry options (CLI, API, Client)."""

from __future__ import annotations

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from speedq.schemas.record import JobState
from speedq.schemas.rules import BackendName, JobId, ModelName, Slug, UserInput


class ListQuery(UserInput):
    model_config = ConfigDict(extra="forbid")
    team: Slug | None = None
    state: JobState | None = None
    limit: int = Field(default=20, ge=1, le=1000)


class LogQuery(UserInput):
    tail: int | None = Field(default=None, ge=1, le=1_000_000)


class ApiOptions(UserInput):
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(ge=1, le=65535)


class WorkerOptions(UserInput):
    backends: list[BackendName] = Field(default_factory=list)
    notify_only: bool = False  # a worker that only delivers webhooks, so none waits behind a run

    @model_validator(mode="after")
    def _serves_something(self) -> WorkerOptions:
        if self.notify_only and self.backends:
            raise ValueError("--notify-only takes no --backend")
        if not self.notify_only and not self.backends:
            raise ValueError("give at least one --backend")
        return self


class JobRef(UserInput):
    """A job id as typed by a user."""

    id: JobId


class StatsQuery(UserInput):
    model_config = ConfigDict(extra="forbid")
    team: Slug | None = None




class LeaderboardQuery(UserInput):
    model_config = ConfigDict(extra="forbid")
    model: ModelName | None = None
    team: Slug | None = None
    limit: int = Field(default=50, ge=1, le=1000)


MAX_COMPARED = 12  # columns a terminal or a plot can still tell apart


class CompareQuery(UserInput):
    """Jobs to compare, in the order given (a job given twice is shown once)."""

    model_config = ConfigDict(extra="forbid")
    jobs: list[JobId] = Field(min_length=1, max_length=MAX_COMPARED)

    @field_validator("jobs", mode="after")
    @classmethod
    def _once_each(cls, jobs: list[str]) -> list[str]:
        return list(dict.fromkeys(jobs))
