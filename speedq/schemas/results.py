"""A finished run's score: what the pinned commit's own base_train printed, plus what speedq adds
(GPU-hours and cost). dev/LEADERBOARD.md ranks runs by `training_time_s` once `core_metric` beats
GPT-2's on one 8xH100 node."""

from __future__ import annotations

from pydantic import computed_field

from speedq.gpu import nanochat
from speedq.schemas.rules import Schema


class RunResults(Schema):
    # From base_train's output (None where this commit or these options did not print it).
    training_time_s: float | None = None  # `Total training time`: the speedrun's time
    core_metric: float | None = None  # the last `CORE metric`
    min_val_bpb: float | None = None  # `Minimum validation bpb`
    val_bpb: float | None = None  # the last `Validation bpb`
    steps: int | None = None  # steps trained
    tokens: int | None = None  # `Total number of training tokens`
    total_flops: float | None = None  # `Total training FLOPs estimate`
    mfu_pct: float | None = None  # mean bf16_mfu of the step lines after warm-up
    tokens_per_s: float | None = None  # mean tok/sec of the step lines after warm-up
    # What speedq adds.
    mode: str = "full"
    model: str = ""
    gpu_type: str = ""
    gpu_count: int = 0
    gpu_hours: float = 0.0  # every attempt of the job, preflight included
    cost_usd: float = 0.0  # gpu_hours at the price table's rate for gpu_type

    def summary(self) -> str:
        """One line (the success notification): the figures the run has, GPU-hours and cost."""
        parts = []
        if self.training_time_s is not None:
            parts.append(f"training time {self.training_time_s / 60:.2f}m")
        if self.core_metric is not None:
            parts.append(f"CORE {self.core_metric:.4f}" + (" (beats GPT-2)" if self.beats_gpt2 else ""))
        if self.val_bpb is not None:
            parts.append(f"val bpb {self.val_bpb:.4f}")
        if self.min_val_bpb is not None:
            parts.append(f"min val bpb {self.min_val_bpb:.4f}")
        if self.steps is not None:
            parts.append(f"{self.steps:,} steps")
        if self.mfu_pct is not None:
            parts.append(f"MFU {self.mfu_pct:.2f}%")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/sec")
        parts.append(f"{self.gpu_hours:.2f} GPU-hours, ${self.cost_usd:,.2f}")
        return ", ".join(parts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def beats_gpt2(self) -> bool:
        """CORE above GPT-2's, on the leaderboard's hardware, in a full run: a time-to-GPT-2 entry."""
        return (self.mode == "full" and self.core_metric is not None and self.core_metric > nanochat.GPT2_CORE
                and (self.gpu_type, self.gpu_count) == nanochat.LEADERBOARD_GPU and self.training_time_s is not None)
