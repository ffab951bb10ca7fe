"""The runner's wire format: what the worker hands the runner and reads back from the run dir."""

from __future__ import annotations

import time
from enum import Enum
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
)

from speedq import config
from speedq.schemas.rules import Mode, ModelName, TrainArgValue


class Progress(BaseModel):
    """The runner's `progress.json`: where the run is now. `step` counts steps done (nanochat
    prints 0-based indexes: `step 00004/00010` is the fifth step done)."""

    stage: str | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    checkpoint_step: int | None = None  # newest complete checkpoint
    resumed_from_step: int | None = None
    reached_before_resume: int | None = None  # the last step the attempt before this one printed
    val_bpb: float | None = None  # the latest `Validation bpb`
    min_val_bpb: float | None = None  # `Minimum validation bpb` at the end of base training
    core_metric: float | None = None  # the latest `CORE metric`
    training_time_s: float | None = None  # `Total training time` (the speedrun metric)
    # Modal only (speedq/gpu/offload.py): checkpoints saved locally, copied to the Volume behind
    save_blocked_s: list[float] = Field(default_factory=list)  # training time each save took
    offloaded_step: int | None = None  # newest checkpoint on the Volume
    commit_failures: int = 0
    reload_failures: int = 0
    last_commit_error: str | None = None
    last_reload_error: str | None = None
    updated_at: float = Field(default_factory=time.time)


class Outcome(str, Enum):
    """How one attempt ended."""

    succeeded = "succeeded"
    crashed = "crashed"  # the run's own code failed (non-zero exit, remote error)
    preempted = "preempted"  # the container or process went away before the run finished
    timed_out = "timed_out"
    stalled = "stalled"  # no progress for too long
    cancelled = "cancelled"
    lost = "lost"  # the backend no longer knows the call (expired result, unknown id)
    launch_failed = "launch_failed"  # never started: credentials, deployment, network
    fenced = "fenced"  # a newer attempt claimed the run directory; this one stopped without writing

    @property
    def retryable(self) -> bool:
        return self in (Outcome.crashed, Outcome.preempted, Outcome.timed_out, Outcome.stalled, Outcome.lost)


class RunRequest(BaseModel):
    """Everything the runner needs for one attempt; crosses to it as JSON."""

    job_id: str
    attempt: int = Field(ge=1)
    model: ModelName
    mode: Mode
    nproc: int = Field(ge=1, le=config.MAX_GPU_COUNT)
    gpu_type: str
    commit: str
    repo: str  # URL or path of the nanochat git repository
    run_dir: str
    data_dir: str
    cache_dir: str
    # torchrun: the real thing; python: one process; sim: one process that plays nproc ranks
    launcher: Literal["torchrun", "python", "sim"] = "torchrun"
    save_every: int | None = None
    force_restart: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    train_args: dict[str, TrainArgValue] = Field(default_factory=dict)  # validated on the JobSpec
    offline: bool = False  # skip the stages that need the internet (SPEEDQ_OFFLINE=1 on a local worker)
    # A preflight (speedq.gpu.plan.preflight_request): this many steps on one GPU, then stop after
    # base_train. None: the job's own run.
    preflight_steps: int | None = Field(default=None, ge=1)


class RunResult(BaseModel):
    """The runner's last word on an attempt, written when it ends by itself."""

    job_id: str
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    error: str | None = None
    resumed_from_step: int | None = None
    final_step: int | None = None
    finished_at: float = Field(default_factory=time.time)


