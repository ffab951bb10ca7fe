"""Every shape speedq stores or accepts, as pydantic models; all user input is validated here.

Split by role: `rules` (field rules, `describe`), `spec` (what a user submits), `queries` (what a
user asks for), `protocol` (the runner's wire format), `record` (what is stored), `teams`,
`accounting` and `views` (what status and the dashboard show). Every public name is re-exported
here, so `from speedq.schemas import X` works for all of them.

The GPU side imports this package too (progress, run requests and results cross from the runner
to the worker through files), so it depends on pydantic and the standard library only.
"""

from __future__ import annotations

from speedq.schemas.accounting import GpuTypeName, PriceTable, TeamStats, WaitTimes
from speedq.schemas.protocol import Outcome, Progress, RunRequest, RunResult
from speedq.schemas.queries import ApiOptions, JobRef, ListQuery, LogQuery, StatsQuery, WorkerOptions
from speedq.schemas.record import ACTIVE_STATES, Attempt, AttemptStatus, JobRecord, JobState, LogPointer, Submitted
from speedq.schemas.rules import (
    MAX_DEPTH,
    MAX_REF_LEN,
    MAX_TRAIN_ARGS,
    MIN_DEPTH,
    MODEL_RE,
    SLUG_RE,
    BackendName,
    GitRef,
    Gpu,
    GpuSpec,
    JobId,
    Mode,
    ModelName,
    Priority,
    Seconds,
    Slug,
    TrainArgs,
    TrainArgValue,
    UserInput,
    depth_of,
    describe,
)
from speedq.schemas.spec import JobOptions, JobSpec, SubmitRequest
from speedq.schemas.teams import (
    MAX_URL_LEN,
    GpuHours,
    MaxQueued,
    MaxRunning,
    TeamLimits,
    TeamRef,
    TeamSettings,
    WebhookUrl,
)
from speedq.schemas.views import Board, JobOverview, JobPage, JobStatus, LossPoint, TeamJobs

__all__ = [
    "ACTIVE_STATES",
    "MAX_DEPTH",
    "MAX_REF_LEN",
    "MAX_TRAIN_ARGS",
    "MAX_URL_LEN",
    "MIN_DEPTH",
    "MODEL_RE",
    "SLUG_RE",
    "ApiOptions",
    "Attempt",
    "AttemptStatus",
    "BackendName",
    "Board",
    "GitRef",
    "Gpu",
    "GpuHours",
    "GpuSpec",
    "GpuTypeName",
    "JobId",
    "JobOptions",
    "JobOverview",
    "JobPage",
    "JobRecord",
    "JobRef",
    "JobSpec",
    "JobState",
    "JobStatus",
    "ListQuery",
    "LogPointer",
    "LogQuery",
    "LossPoint",
    "MaxQueued",
    "MaxRunning",
    "Mode",
    "ModelName",
    "Outcome",
    "PriceTable",
    "Priority",
    "Progress",
    "RunRequest",
    "RunResult",
    "Seconds",
    "Slug",
    "StatsQuery",
    "SubmitRequest",
    "Submitted",
    "TeamJobs",
    "TeamLimits",
    "TeamRef",
    "TeamSettings",
    "TeamStats",
    "TrainArgValue",
    "TrainArgs",
    "UserInput",
    "WaitTimes",
    "WebhookUrl",
    "WorkerOptions",
    "depth_of",
    "describe",
]
