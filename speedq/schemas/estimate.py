"""A run's cost before it runs: the estimate a submit reserves against its team's budget, the
samples past runs leave for it, and the preview `submit --dry-run` shows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field

from speedq.schemas.rules import Schema
from speedq.schemas.spec import JobSpec


class Estimate(Schema):
    """GPU-hours and cost a job is expected to take, and where the figure comes from."""

    gpu_seconds: int  # whole seconds: what the submit reserves (an integer counter stays exact)
    cost_usd: float
    source: Literal["history", "table"]
    basis: str  # one line a person can check, e.g. "median of 3 past d12 smoke runs on H100"
    runs: list[str] = Field(default_factory=list)  # the past jobs it came from (source "history")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gpu_hours(self) -> float:
        return round(self.gpu_seconds / 3600, 4)


class RunSample(Schema):
    """A succeeded job's spend, kept per (team, backend, model, mode, GPU type) for later estimates."""

    job: str
    gpu_seconds: float  # every attempt of the job
    tokens: int  # training tokens nanochat's sizing gave it

    @property
    def seconds_per_token(self) -> float:
        return self.gpu_seconds / self.tokens if self.tokens > 0 else 0.0


class Budget(Schema):
    """A team's GPU-hour budget as a submit sees it: spent (ended attempts), reserved (estimates
    of its queued and running jobs, less what their attempts this round already spent)."""

    gpu_hours_budget: float | None
    spent_gpu_hours: float
    reserved_gpu_hours: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def left_gpu_hours(self) -> float | None:
        """What a new run may still take (None: no budget)."""
        if self.gpu_hours_budget is None:
            return None
        return round(self.gpu_hours_budget - self.spent_gpu_hours - self.reserved_gpu_hours, 4)


class Preview(Schema):
    """What `submit --dry-run` shows: nothing is stored. `refusal` is the line the submit would
    be refused with now (None: it would be queued); `active_job`, the job already holding the run,
    which the submit would return instead of queuing another."""

    spec: JobSpec
    commit: str | None  # the ref resolved as a worker would pin it; None when it could not be
    commit_note: str | None = None  # why it is not resolved, in one line
    steps: int | None
    tokens: int
    estimate: Estimate
    budget: Budget
    refusal: str | None = None
    active_job: str | None = None
