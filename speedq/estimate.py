"""What a run will cost before it runs, and what the runs in flight hold against their team's
budget. Pure functions over models: the store, producer, worker and preview do the reading.

- `estimate`: from the team's own succeeded runs of the same model, mode and GPU type when it
  has any (the median GPU-seconds per training token, times this run's tokens: a different
  horizon or batch scales with it), else from the table in `config` (FLOPs at an assumed MFU,
  plus a fixed overhead per run). GPU count is left out of the match: GPU-seconds per token
  hardly change with it.
- `reservation_s`: a job that has not ended holds its estimate less what its attempts this
  round already spent (those count as spent), never below 0; an ended job holds nothing. The
  store keeps each team's sum of these in one counter, written with each record change.
- A submit (or retry) fits when spent + reserved + its own estimate is within the budget; a job
  about to start its round's first attempt fits when spent + reserved (its own included) is, so
  a budget lowered after the submit (or runs that spent more than their estimates) stops runs
  before they start, the first to be picked up first, until the rest fit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from functools import lru_cache

from speedq import config
from speedq.gpu import nanochat
from speedq.schemas import Budget, Estimate, JobRecord, JobSpec, PriceTable, RunSample, TeamSettings, depth_of


def tokens_of(spec: JobSpec) -> int:
    """Training tokens nanochat's sizing gives the job."""
    return spec.sizing().train_tokens


def table_estimate(spec: JobSpec, prices: PriceTable) -> Estimate:
    gpu = spec.gpu.type
    seconds, basis = _table_seconds(spec.model, spec.mode, gpu, spec.gpu.count, nanochat.args_key(spec.train_args),
                                    tokens_of(spec))
    return Estimate(gpu_seconds=seconds, cost_usd=_cost(seconds, gpu, prices), source="table", basis=basis)


@lru_cache(maxsize=1024)
def _table_seconds(model: str, mode: str, gpu: str, gpu_count: int, key: nanochat.ArgsKey,
                   tokens: int) -> tuple[int, str]:
    """The table estimate's GPU-seconds and its basis line: pure, so remembered (every submit of a
    kind of run asks for the same)."""
    args = nanochat.args_of(key)
    per_token = nanochat.flops_per_token(
        depth_of(model), int(args.get("aspect-ratio", 64)), int(args.get("head-dim", 128)),
        int(args.get("max-seq-len", 2048)), str(args.get("window-pattern", "SSSL")),
    )
    train_s = tokens * per_token / (config.ESTIMATE_PEAK_FLOPS[gpu] * config.ESTIMATE_MFU)
    overhead_s = config.ESTIMATE_OVERHEAD_S[mode] * gpu_count
    basis = (
        f"{tokens * per_token:.3g} FLOPs at {config.ESTIMATE_MFU:.0%} MFU of {gpu}'s "
        f"{config.ESTIMATE_PEAK_FLOPS[gpu] / 1e12:g} TFLOP/s, plus {config.ESTIMATE_OVERHEAD_S[mode] // 60} min "
        f"of overhead on each GPU (no past {model} {mode} runs on {gpu} for this team)"
    )
    return math.ceil(train_s + overhead_s), basis


def history_estimate(spec: JobSpec, samples: Sequence[RunSample], prices: PriceTable) -> Estimate | None:
    usable = [s for s in samples if s.tokens > 0]
    if not usable:
        return None
    rate = statistics.median(s.seconds_per_token for s in usable)
    seconds = math.ceil(rate * tokens_of(spec))
    basis = (
        f"median of {len(usable)} past {spec.model} {spec.mode} run{'s' if len(usable) != 1 else ''} "
        f"on {spec.gpu.type} ({rate * 1e6:.3g} GPU-seconds per million tokens)"
    )
    return Estimate(gpu_seconds=seconds, cost_usd=_cost(seconds, spec.gpu.type, prices), source="history",
                    basis=basis, runs=[s.job for s in usable])


def estimate(spec: JobSpec, samples: Sequence[RunSample], prices: PriceTable) -> Estimate:
    return history_estimate(spec, samples, prices) or table_estimate(spec, prices)


def _cost(gpu_seconds: float, gpu_type: str, prices: PriceTable) -> float:
    return round(gpu_seconds / 3600 * prices.usd_per_gpu_hour.get(gpu_type, 0.0), 2)


def sample_of(record: JobRecord) -> RunSample:
    """What a succeeded job leaves for later estimates: every ended attempt's GPU-seconds."""
    spent = sum(a.gpu_seconds for a in record.attempts if a.ended_at is not None)
    return RunSample(job=record.id, gpu_seconds=spent, tokens=tokens_of(record.spec))


def reservation_s(record: JobRecord) -> int:
    """GPU-seconds the job holds against its team's budget (see the module docstring)."""
    if record.estimate is None or record.state.terminal:
        return 0
    if record.estimate.gpu_seconds >= 2**63:
        return 0  # stored by a speedq without MAX_JOB_GPU_SECONDS, whose reservation Redis refused
    spent = sum(a.gpu_seconds for a in record.attempts[record.round_start:] if a.ended_at is not None)
    return max(0, record.estimate.gpu_seconds - math.floor(spent))


def budget(team: TeamSettings, spent_s: float, reserved_s: float) -> Budget:
    return Budget(gpu_hours_budget=team.gpu_hours_budget, spent_gpu_hours=round(spent_s / 3600, 4),
                  reserved_gpu_hours=round(reserved_s / 3600, 4))


def refusal(team: TeamSettings, spent_s: float, reserved_s: float, needed_s: float) -> str | None:
    """Why a run needing `needed_s` more GPU-seconds may not go in, or None if it fits."""
    if team.gpu_hours_budget is None:
        return None
    limit_s = team.gpu_hours_budget * 3600
    if spent_s >= limit_s:
        return (f"team {team.name!r} has used {spent_s / 3600:.2f} of its {team.gpu_hours_budget:g} GPU-hour budget; "
                "ask an operator to raise it (speedq team set)")
    if spent_s + reserved_s + needed_s > limit_s:
        left = (limit_s - spent_s - reserved_s) / 3600
        return (f"team {team.name!r}: this run's estimated {needed_s / 3600:.2f} GPU-hours do not fit in the "
                f"{max(0.0, left):.2f} left of its {team.gpu_hours_budget:g} GPU-hour budget "
                f"({spent_s / 3600:.2f} spent, {reserved_s / 3600:.2f} reserved by runs queued or running)")
    return None


def refusal_at_start(team: TeamSettings, spent_s: float, reserved_s: float) -> str | None:
    """Why a job whose reservation is already counted may not start its round (budget lowered)."""
    if team.gpu_hours_budget is None or spent_s + reserved_s <= team.gpu_hours_budget * 3600:
        return None
    return (f"not started: team {team.name!r} is over its {team.gpu_hours_budget:g} GPU-hour budget with this run "
            f"({spent_s / 3600:.2f} spent, {reserved_s / 3600:.2f} reserved by runs queued or running, this one's "
            "included): the budget was lowered, or runs spent more than their estimates, since the submit")

