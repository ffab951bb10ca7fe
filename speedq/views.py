"""How records look to a person: rich tables for `status`, `ls`, `team ls` and `stats`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from speedq.schemas import (
    Estimate,
    JobRecord,
    JobState,
    PreflightState,
    Preview,
    Progress,
    RunResults,
    TeamSettings,
    TeamStats,
)

STATE_STYLE = {
    JobState.queued: "cyan",
    JobState.starting: "yellow",
    JobState.running: "bold yellow",
    JobState.retrying: "magenta",
    JobState.succeeded: "bold green",
    JobState.failed: "bold red",
    JobState.cancelled: "dim",
}


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def ago(ts: float | None) -> str:
    return f"{duration(time.time() - ts)} ago" if ts else "-"


def state_text(record: JobRecord) -> Text:
    label = record.state.value
    if record.cancel_requested and not record.state.terminal:
        label += " (cancelling)"
    return Text(label, style=STATE_STYLE[record.state])


def stage_text(record: JobRecord, short: bool = False) -> str:
    """The runner's stage; in preflight, that it is the preflight's (`ls`: just "preflight")."""
    p = record.progress
    stage = p.stage if p and p.stage else "-"
    if not record.in_preflight:
        return stage
    return "preflight" if short else f"preflight: {stage} (1 GPU)"


def step_text(record: JobRecord) -> str:
    p = record.progress
    if p is None or p.step is None:
        return "-"
    if p.total:
        return f"{p.step}/{p.total} ({100 * p.step / p.total:.0f}%)"
    return str(p.step)


def eta_text(record: JobRecord) -> str:
    if record.state.terminal or record.progress is None:
        return "-"
    return duration(record.progress.eta_s)


def score_text(record: JobRecord) -> str:
    """`CORE/bpb` for `ls`: the result's, or the running run's latest."""
    figures: RunResults | Progress | None = record.results or record.progress
    if figures is None or (figures.core_metric is None and figures.val_bpb is None):
        return "-"
    core, bpb = figures.core_metric, figures.val_bpb
    return f"{'-' if core is None else f'{core:.4f}'}/{'-' if bpb is None else f'{bpb:.4f}'}"


def jobs_table(records: list[JobRecord], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    id_width = max((len(r.id) for r in records), default=2)
    for column in ("ID", "TEAM", "RUN", "SOURCE", "STATE", "STAGE", "STEP", "LOSS", "ETA", "TIME", "CORE/BPB", "TRIES",
                   "BACKEND", "SUBMITTED"):
        # A narrow terminal squeezes the other columns first: the id is what a user types next.
        table.add_column(column, no_wrap=True, min_width=id_width if column == "ID" else None)
    for r in records:
        p = r.progress
        table.add_row(
            r.id,
            r.spec.team,
            r.spec.run_name,
            r.source,
            state_text(r),
            stage_text(r, short=True),
            step_text(r),
            f"{p.loss:.3f}" if p and p.loss is not None else "-",
            eta_text(r),
            duration(r.results.training_time_s) if r.results else "-",
            score_text(r),
            f"{r.attempts_this_round}/{r.spec.max_attempts}",
            r.spec.backend,
            ago(r.created_at),
        )
    if not records:
        table.add_row(*(["-"] * 4), Text("no jobs", style="dim"), *(["-"] * 9))
    return table


def metrics_text(p: Progress | None) -> str:
    """nanochat's evaluation figures, as far as the run got: val bpb, CORE, training time."""
    if p is None or (p.val_bpb is None and p.min_val_bpb is None):
        return "-"
    parts = [f"{p.val_bpb:.4f}" if p.val_bpb is not None else "-"]
    if p.min_val_bpb is not None:
        parts.append(f"(min {p.min_val_bpb:.4f})")
    if p.core_metric is not None:
        parts.append(f"CORE {p.core_metric:.4f}")
    if p.training_time_s is not None:
        parts.append(f"training time {p.training_time_s / 60:.2f}m")
    return " ".join(parts)


def preflight_text(record: JobRecord) -> str | Text:
    """The preflight's state, size, GPU time and, when it failed, its error and log."""
    done = record.preflight
    if done is None:
        if record.spec.mode == "full" and record.spec.gpu.count > 1 and not record.spec.preflight:
            return "skipped (--no-preflight)"
        return "-"
    hours = record.preflight_gpu_seconds / 3600
    text = f"{done.state.value}: {done.steps} steps on {done.gpu}, {hours:.3f} GPU-hours"
    if done.state is PreflightState.failed:
        where = f"\n{done.log.command}" if done.log is not None else ""
        return Text(f"{text}\n{done.error or ''}{where}", style="red")
    return text


def job_detail(record: JobRecord) -> Group:
    spec, p = record.spec, record.progress
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows: list[tuple[str, object]] = [
        ("job", record.id),
        ("state", state_text(record)),
        ("team", spec.team),
        ("run", f"{spec.run_name}  ({record.run_dir or 'no run directory yet'})"),
        ("spec", f"{spec.model} {spec.mode} on {spec.gpu}, backend {spec.backend}, priority {spec.priority}"),
        ("repo", f"{spec.repo}  ({record.source})"),
        ("commit", f"{spec.repo_ref} -> {record.nanochat_commit or 'not pinned yet'}"),
        ("train args", " ".join(f"{k}={v}" for k, v in spec.train_args.items()) or "-"),
        ("attempts", f"{record.attempts_this_round} of {spec.max_attempts}"
                     + (f" and {record.preflights_this_round} of the preflight" if record.preflights_this_round else "")
                     + (f" ({len(record.attempts)} in all)" if record.round_start else "")),
        ("preflight", preflight_text(record)),
        ("stage", stage_text(record)),
        ("step", step_text(record)),
        ("loss", f"{p.loss:.4f}" if p and p.loss is not None else "-"),
        ("eta", eta_text(record)),
        ("checkpoint", f"step {p.checkpoint_step}" if p and p.checkpoint_step is not None else "-"),
        ("val bpb", metrics_text(p)),
        ("log", f"{record.log.path}\n{record.log.command}" if record.log else "-"),
        ("gpu time", f"{record.gpu_seconds / 3600:.3f} GPU-hours"),
        ("estimate", estimate_text(record.estimate) if record.estimate else "-"),
        ("recomputed", f"{record.steps_recomputed} steps"),
        ("submitted", when(record.created_at)),
        ("started", when(record.started_at)),
        ("finished", when(record.finished_at)),
        ("heartbeat", f"{ago(record.heartbeat_at)} by {record.worker}" if record.heartbeat_at else "-"),
    ]
    if record.error:
        rows.append(("error", Text(record.error, style="red")))
    for key, value in rows:
        facts.add_row(key, value)  # type: ignore[arg-type]
    parts: list[Table] = [facts]
    if record.results is not None:
        parts.append(results_table(record.results))
    if not record.attempts:
        return Group(*parts)
    attempts = Table(title="attempts", title_justify="left")
    for column in ("#", "BACKEND", "CALL ID", "STARTED", "ENDED", "OUTCOME", "RESUMED FROM", "STEPS", "ERROR"):
        attempts.add_column(column)
    for a in record.attempts:
        attempts.add_row(
            f"{a.number} (preflight)" if a.preflight else str(a.number),
            a.backend,
            a.call_id or "-",
            when(a.started_at),
            when(a.ended_at),
            a.outcome.value if a.outcome else "running",
            str(a.resumed_from_step) if a.resumed_from_step is not None else "-",
            str(a.steps_run),
            a.error or "",
        )
    return Group(*parts, attempts)


def figure(value: float | None, form: str, unit: str = "") -> str:
    """A figure a run may not have printed: '-' when it did not."""
    return "-" if value is None else f"{value:{form}}{unit}"


def run_time(seconds: float | None) -> str:
    """A training time to the second: 2h45m36s, 4m05s."""
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def count(value: float | None) -> str:
    """1.05B, 524.3M, 12.0k."""
    if value is None:
        return "-"
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:g}"


# A run's results, one row per figure in the order a speedrunner reads them: status shows them,
# compare sets them side by side, and the dashboard's RESULT_FIGURES (dashboard.html) matches.
RESULT_FIGURES: list[tuple[str, Callable[[RunResults], str]]] = [
    ("training time", lambda r: run_time(r.training_time_s)),
    ("CORE", lambda r: figure(r.core_metric, ".4f")),
    ("beats GPT-2", lambda r: "yes" if r.beats_gpt2 else "no"),
    ("val bpb", lambda r: figure(r.val_bpb, ".4f")),
    ("min val bpb", lambda r: figure(r.min_val_bpb, ".4f")),
    ("steps", lambda r: figure(r.steps, ",")),
    ("tokens", lambda r: count(r.tokens)),
    ("FLOPs", lambda r: figure(r.total_flops, ".3e")),
    ("MFU", lambda r: figure(r.mfu_pct, ".2f", "%")),
    ("tok/s", lambda r: count(r.tokens_per_s)),
    ("GPU-hours", lambda r: f"{r.gpu_hours:.3f}"),
    ("cost", lambda r: f"${r.cost_usd:,.2f}"),
]


def results_table(res: RunResults) -> Table:
    """The run's score: base_train's own figures, and GPU-hours and cost of all attempts."""
    table = Table.grid(padding=(0, 2))
    table.title, table.title_justify = "results", "left"
    table.add_column(style="bold")
    table.add_column()
    for label, shown in RESULT_FIGURES:
        table.add_row(label, shown(res))
    return table


def estimate_text(estimate: Estimate) -> str:
    return f"{estimate.gpu_hours:.3f} GPU-hours, ${estimate.cost_usd:.2f} (from {estimate.source})"


def preview_panel(preview: Preview) -> Panel:
    """`submit --dry-run`: what the submit would do, in a small panel."""
    spec, budget = preview.spec, preview.budget
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    commit: Text | str = preview.commit or Text(preview.commit_note or "not resolved", style="yellow")
    left = budget.left_gpu_hours
    rows: list[tuple[str, Text | str]] = [
        ("run", f"{spec.run_key}: {spec.model} {spec.mode} on {spec.gpu} via {spec.backend}"),
        ("commit", Text.assemble(f"{spec.repo_ref} -> ", commit) if spec.repo_ref != preview.commit else commit),
        ("steps", f"{preview.steps if preview.steps is not None else '-'} ({preview.tokens:,} tokens)"),
        ("estimate", estimate_text(preview.estimate)),
        ("basis", Text(preview.estimate.basis, style="dim")),
        ("budget", "no GPU-hour budget" if left is None else
         f"{left:.3f} of {budget.gpu_hours_budget:g} GPU-hours left ({budget.spent_gpu_hours:.3f} spent, "
         f"{budget.reserved_gpu_hours:.3f} reserved by runs queued or running)"),
        ("verdict", _verdict(preview)),
    ]
    for key, value in rows:
        facts.add_row(key, value)
    return Panel(facts, title="speedq submit --dry-run (nothing stored)", title_align="left", expand=False)


def _verdict(preview: Preview) -> Text:
    if preview.active_job:
        return Text(f"run {preview.spec.run_key} already has active job {preview.active_job}: a submit returns it")
    if preview.refusal:
        return Text(f"refused: {preview.refusal}", style="bold red")
    return Text("would be queued", style="bold green")


def _limit(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def teams_table(teams: list[TeamSettings]) -> Table:
    table = Table(title="speedq teams", title_justify="left")
    for column in ("TEAM", "ADDED", "MAX QUEUED", "MAX RUNNING", "GPU-H BUDGET", "TOKEN"):
        table.add_column(column, no_wrap=True)
    for t in teams:
        table.add_row(
            t.name,
            when(t.created_at) if t.added else Text("no (open, no limits)", style="dim"),
            _limit(t.max_queued),
            _limit(t.max_running),
            _limit(t.gpu_hours_budget),
            "set" if t.token_hash else "-",
        )
    if not teams:
        table.add_row(Text("no teams", style="dim"), *(["-"] * 5))
    return table


def stats_table(stats: list[TeamStats]) -> Table:
    table = Table(title="speedq stats", title_justify="left")
    states = list(JobState)
    for column in ("TEAM", *(s.value.upper() for s in states), "GPU-HOURS", "EST. COST", "WAIT MEDIAN", "WAIT P95"):
        table.add_column(column, no_wrap=True, justify="left" if column == "TEAM" else "right")
    for s in stats:
        budget = f" / {s.gpu_hours_budget:g}" if s.gpu_hours_budget is not None else ""
        table.add_row(
            s.team,
            *(str(s.jobs.get(state, 0)) for state in states),
            f"{s.gpu_hours:.3f}{budget}",
            f"${s.estimated_cost_usd:,.2f}",
            duration(s.queue_wait.median_s),
            duration(s.queue_wait.p95_s),
        )
    if not stats:
        table.add_row(Text("no teams", style="dim"), *(["-"] * (len(states) + 4)))
    return table
