"""Per-team figures for `speedq stats` and the API: jobs by state, GPU-hours, estimated cost and
queue waits. Each figure is read from a counter the store keeps in step with the records, so
stats cost the same with ten jobs or a hundred thousand."""

from __future__ import annotations

import math

from speedq import settings
from speedq.schemas import JobRecord, PriceTable, Progress, RunResults, TeamSettings, TeamStats, WaitTimes
from speedq.store import Store

# The last settings priced and their table.
_priced: list[tuple[settings.Settings, PriceTable]] = []


def prices() -> PriceTable:
    """The default price table with `SPEEDQ_PRICES` laid over it (validated: a bad value is a
    one-line error, not a wrong bill). Built once per settings (every submit prices its job)."""
    current = settings.get()
    if not _priced or _priced[0][0] is not current:  # settings.reload() makes a new Settings
        _priced[:] = [(current, PriceTable.load(current.prices))]
    return _priced[0][1]


def run_results(record: JobRecord, table: PriceTable) -> RunResults:
    """A finished run's score: base_train's figures as the runner read them into its progress,
    and the GPU-hours of every attempt of the job priced at its GPU type's rate."""
    p, spec = record.progress or Progress(), record.spec
    hours = record.gpu_seconds / 3600
    return RunResults(
        training_time_s=p.training_time_s, core_metric=p.core_metric, min_val_bpb=p.min_val_bpb, val_bpb=p.val_bpb,
        steps=p.step, tokens=p.tokens, total_flops=p.total_flops, mfu_pct=p.mfu_pct, tokens_per_s=p.tokens_per_s,
        mode=spec.mode, model=spec.model, gpu_type=spec.gpu.type, gpu_count=spec.gpu.count,
        gpu_hours=hours, cost_usd=round(hours * table.usd_per_gpu_hour.get(spec.gpu.type, 0.0), 2),
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): always one of the observed values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def team_stats(store: Store, team: TeamSettings, table: PriceTable) -> TeamStats:
    seconds = store.gpu_seconds(team.name)
    waits = store.queue_waits(team.name)
    cost = sum(s / 3600 * table.usd_per_gpu_hour.get(gpu, 0.0) for gpu, s in seconds.items())
    return TeamStats(
        team=team.name,
        jobs=store.counts(team.name),
        gpu_seconds=seconds,
        gpu_hours=sum(seconds.values()) / 3600,
        estimated_cost_usd=round(cost, 2),
        queue_wait=WaitTimes(samples=len(waits), median_s=percentile(waits, 50), p95_s=percentile(waits, 95)),
        max_queued=team.max_queued,
        max_running=team.max_running,
        gpu_hours_budget=team.gpu_hours_budget,
        running=len(store.slot_holders(team.name)),
    )


def stats(store: Store, team: str | None = None) -> list[TeamStats]:
    """One team's figures, or every known team's, by name."""
    table = prices()
    teams = [store.team(team)] if team else store.teams()
    return [team_stats(store, t, table) for t in teams]
