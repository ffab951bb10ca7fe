"""Finished runs with results, put through the Store as the worker puts them (a succeeded state
and `results` in one update), for the leaderboard and compare tests. The figures are inputs of
the kind nanochat prints; what the tests check is the ordering and filtering speedq does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from speedq.schemas import JobSpec, JobState, Progress, RunResults
from speedq.store import Store

PRICE_H100 = 3.95


@dataclass(frozen=True)
class Run:
    team: str
    model: str
    gpu: str = "H100:8"
    mode: str = "full"
    time_s: float | None = None
    core: float | None = None
    bpb: float | None = None
    train_args: dict[str, object] = field(default_factory=dict)
    state: JobState = JobState.succeeded


# name -> the run; the names are what the tests talk about.
RUNS = {
    "fast": Run("alpha", "d24", time_s=9_800.0, core=0.2601, bpb=0.7421, train_args={"fp8": True, "matrix-lr": 0.025}),
    "slow": Run("beta", "d24", time_s=10_900.0, core=0.2590, bpb=0.7398),
    "deep": Run("beta", "d26", time_s=10_300.0, core=0.2630, bpb=0.7302, train_args={"window-pattern": "SSL"}),
    "weak": Run("alpha", "d24", time_s=9_000.0, core=0.2510, bpb=0.7555),  # CORE below GPT-2's
    "half": Run("alpha", "d24", gpu="H100:4", time_s=8_000.0, core=0.2700, bpb=0.7350),  # not 8 GPUs
    "small": Run("alpha", "d12", gpu="H100:1", time_s=2_400.0, core=0.1900, bpb=0.8800),
    "smoke": Run("beta", "d12", mode="smoke", time_s=30.0, bpb=1.2000),  # a smoke run ranks nowhere
    "live": Run("beta", "d24", state=JobState.running),  # no results yet
}


def results_for(spec: JobSpec, run: Run) -> RunResults:
    gpu_hours = (run.time_s or 0) / 3600 * spec.gpu.count
    return RunResults(
        training_time_s=run.time_s, core_metric=run.core, min_val_bpb=run.bpb, val_bpb=run.bpb,
        steps=5_000, tokens=5_000 * 1_048_576, total_flops=4.2e19, mfu_pct=48.5, tokens_per_s=535_000.0,
        mode=spec.mode, model=spec.model, gpu_type=spec.gpu.type, gpu_count=spec.gpu.count,
        gpu_hours=gpu_hours, cost_usd=gpu_hours * PRICE_H100,
    )


def store_run(store: Store, name: str, run: Run) -> str:
    """Submit-time record, then the success write: state, commit and results in one update."""
    spec = JobSpec.model_validate({
        "team": run.team, "model": run.model, "gpu": run.gpu, "mode": run.mode, "run_name": name,
        "backend": "modal", "train_args": run.train_args,
    })
    record, _ = store.create_claiming_run(spec)

    def finish(r) -> None:  # type: ignore[no-untyped-def]
        r.state = run.state
        r.nanochat_commit = hashlib.sha1(name.encode()).hexdigest()
        r.started_at = r.created_at + 5
        if run.state == JobState.succeeded:
            r.finished_at = r.created_at + 60
            r.results = results_for(spec, run)

    store.update(record.id, finish)
    return record.id


def seed(store: Store, names: tuple[str, ...] = tuple(RUNS)) -> dict[str, str]:
    """The runs named, stored; name -> job id."""
    return {name: store_run(store, name, RUNS[name]) for name in names}


def store_curve(store: Store, job_id: str, steps: int, floor: float, seconds_per_step: float) -> int:
    """A loss curve as the worker stores it from the runner's progress: from about 11 down to
    `floor`, one point a step apart in time by `seconds_per_step`. Returns the points stored."""
    stored = 0
    for step in range(0, steps + 1, max(1, steps // 60)):
        loss = floor + (11 - floor) / (1 + step / 40)
        progress = Progress(step=step, total=steps, loss=loss, updated_at=1_000_000 + step * seconds_per_step)
        stored += store.append_loss(job_id, progress)
    return stored
