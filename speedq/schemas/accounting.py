"""Accounting: prices and the per-team figures of `speedq stats`."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
)

from speedq import config
from speedq.schemas.record import JobState
from speedq.schemas.rules import Schema


def _known_gpu_type(value: str) -> str:
    known = {t.upper(): t for t in config.GPU_TYPES}
    if value.upper() not in known:
        raise ValueError(f"GPU type must be one of {', '.join(config.GPU_TYPES)}")
    return known[value.upper()]


GpuTypeName = Annotated[str, AfterValidator(_known_gpu_type)]


class PriceTable(Schema):
    """USD per GPU-hour by GPU type; `SPEEDQ_PRICES` (a JSON object) overrides some or all."""

    usd_per_gpu_hour: dict[GpuTypeName, Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]]

    @classmethod
    def load(cls, overrides: dict[str, float] | None) -> PriceTable:
        return cls.model_validate({"usd_per_gpu_hour": {**config.DEFAULT_GPU_PRICES, **(overrides or {})}})


class WaitTimes(Schema):
    samples: int
    median_s: float | None = None
    p95_s: float | None = None


class TeamStats(Schema):
    team: str
    jobs: dict[JobState, int]
    gpu_seconds: dict[str, float]  # by GPU type; sums every ended attempt's GPU count x duration
    gpu_hours: float
    estimated_cost_usd: float
    queue_wait: WaitTimes
    max_queued: int | None = None
    max_running: int | None = None
    gpu_hours_budget: float | None = None
    running: int = 0


