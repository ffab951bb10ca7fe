"""Every shape speedq stores or accepts, as pydantic models; all user input is validated here.

Split by role: `rules` (field rules, `describe`), `spec` (what a user submits), `queries` (what a
user asks for), `protocol` (the runner's wire format), `record` (what is stored), `teams`,
`accounting` and `views` (what status and the dashboard show). Every public name is re-exported
here, imported on first use (PEP 562), so `from speedq.schemas import X` works for all of
them and a reader of one record does not pay for the rest.

The GPU side imports this package too (progress, run requests and results cross from the runner
to the worker through files), so it depends on pydantic and the standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from speedq.lazy import attributes

if TYPE_CHECKING:
    from speedq.schemas.accounting import (
        GpuTypeName,
        PriceTable,
        TeamStats,
        WaitTimes,
    )
    from speedq.schemas.protocol import (
        Outcome,
        Progress,
        RunRequest,
        RunResult,
    )
    from speedq.schemas.queries import (
        ApiOptions,
        JobRef,
        ListQuery,
        LogQuery,
        StatsQuery,
        WorkerOptions,
    )
    from speedq.schemas.record import (
        ACTIVE_STATES,
        Attempt,
        AttemptStatus,
        JobRecord,
        JobState,
        LogPointer,
        Submitted,
    )
    from speedq.schemas.repo import RepoUrl, repo_name
    from speedq.schemas.results import RunResults
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
    from speedq.schemas.spec import (
        JobOptions,
        JobSpec,
        SubmitRequest,
    )
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
    from speedq.schemas.views import (
        Board,
        JobOverview,
        JobPage,
        JobStatus,
        LossPoint,
        TeamJobs,
    )

# Public name -> the module of the package that holds it.
_HOMES = {
    "GpuTypeName": "accounting",
    "PriceTable": "accounting",
    "TeamStats": "accounting",
    "WaitTimes": "accounting",
    "Outcome": "protocol",
    "Progress": "protocol",
    "RunRequest": "protocol",
    "RunResult": "protocol",
    "RunResults": "results",
    "RepoUrl": "repo",
    "repo_name": "repo",
    "ApiOptions": "queries",
    "JobRef": "queries",
    "ListQuery": "queries",
    "LogQuery": "queries",
    "StatsQuery": "queries",
    "WorkerOptions": "queries",
    "ACTIVE_STATES": "record",
    "Attempt": "record",
    "AttemptStatus": "record",
    "JobRecord": "record",
    "JobState": "record",
    "LogPointer": "record",
    "Submitted": "record",
    "MAX_DEPTH": "rules",
    "MAX_REF_LEN": "rules",
    "MAX_TRAIN_ARGS": "rules",
    "MIN_DEPTH": "rules",
    "MODEL_RE": "rules",
    "SLUG_RE": "rules",
    "BackendName": "rules",
    "GitRef": "rules",
    "Gpu": "rules",
    "GpuSpec": "rules",
    "JobId": "rules",
    "Mode": "rules",
    "ModelName": "rules",
    "Priority": "rules",
    "Seconds": "rules",
    "Slug": "rules",
    "TrainArgs": "rules",
    "TrainArgValue": "rules",
    "UserInput": "rules",
    "depth_of": "rules",
    "describe": "rules",
    "JobOptions": "spec",
    "JobSpec": "spec",
    "SubmitRequest": "spec",
    "MAX_URL_LEN": "teams",
    "GpuHours": "teams",
    "MaxQueued": "teams",
    "MaxRunning": "teams",
    "TeamLimits": "teams",
    "TeamRef": "teams",
    "TeamSettings": "teams",
    "WebhookUrl": "teams",
    "Board": "views",
    "JobOverview": "views",
    "JobPage": "views",
    "JobStatus": "views",
    "LossPoint": "views",
    "TeamJobs": "views",
}

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
    "RepoUrl",
    "RunRequest",
    "RunResult",
    "RunResults",
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
    "repo_name",
]


__getattr__ = attributes(__name__, globals(), {name: f"{__name__}.{home}" for name, home in _HOMES.items()})


def __dir__() -> list[str]:
    return __all__
