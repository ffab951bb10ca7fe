"""A shared job queue for nanochat speedruns on Modal GPUs (speedq).

    from speedq import Client, JobSpec

    job = Client().submit(JobSpec(team="vision", mode="smoke")).job

Names are imported on first use (PEP 562), so `import speedq` stays cheap and the CLI's fast
commands do not pay for pydantic models or Redis they never touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from speedq.lazy import attributes

if TYPE_CHECKING:
    from speedq.client import Client
    from speedq.errors import (
        BackendError,
        InvalidInput,
        JobNotFound,
        NotYourJob,
        ProducerError,
        QuotaExceeded,
        RedisUnavailable,
        SettingsInvalid,
        SpeedqError,
        Unauthorized,
    )
    from speedq.schemas import JobRecord, JobSpec, JobState, JobStatus, Outcome, Submitted, TeamStats
    from speedq.settings import Settings

# Where each public name lives.
_HOMES = {
    "Client": "speedq.client",
    "Settings": "speedq.settings",
    **dict.fromkeys(
        ("JobRecord", "JobSpec", "JobState", "JobStatus", "Outcome", "Submitted", "TeamStats"), "speedq.schemas"
    ),
    **dict.fromkeys(
        (
            "SpeedqError", "InvalidInput", "SettingsInvalid", "Unauthorized", "JobNotFound", "ProducerError",
            "NotYourJob", "QuotaExceeded", "RedisUnavailable", "BackendError",
        ),
        "speedq.errors",
    ),
}

__all__ = [
    "BackendError",
    "Client",
    "InvalidInput",
    "JobNotFound",
    "JobRecord",
    "JobSpec",
    "JobState",
    "JobStatus",
    "NotYourJob",
    "Outcome",
    "ProducerError",
    "QuotaExceeded",
    "RedisUnavailable",
    "Settings",
    "SettingsInvalid",
    "SpeedqError",
    "Submitted",
    "TeamStats",
    "Unauthorized",
]


__getattr__ = attributes(__name__, globals(), _HOMES)


def __dir__() -> list[str]:
    return sorted(__all__)
