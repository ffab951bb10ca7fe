"""How the leaderboard and a comparison look in a terminal: rich tables for `leaderboard` and
`compare` (the dashboard draws the same view models in speedq/static/board.js)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.console import Group
from rich.table import Table
from rich.text import Text

from speedq.schemas import BoardRow, ComparedRun, Comparison, Leaderboard, RunResults, TrainArgValue
from speedq.views import STATE_STYLE, figure


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


def options_text(train_args: Mapping[str, TrainArgValue] | None) -> str:
    """base_train's options as given at submit (`fp8` for a flag); '-' for nanochat's defaults."""
    if train_args is None:
        return "(hidden)"
    parts = [k if v is True else f"{k}={v}" for k, v in train_args.items()]
    return " ".join(parts) or "-"



def _time_rows(board: Leaderboard) -> Table:
    scope = " ".join(part for part in (board.model, board.team and f"team {board.team}") if part)
    title = f"time to GPT-2: CORE above {board.gpt2_core} on 8xH100, fastest first" + (f" ({scope})" if scope else "")
    table = Table(title=title, title_justify="left")
    for column in ("#", "TIME", "TEAM", "MODEL", "REPO@COMMIT", "OPTIONS", "CORE", "VAL BPB", "COST", "JOB"):
        table.add_column(column, no_wrap=column != "OPTIONS")
    for row in board.time_to_gpt2:
        r = row.results
        table.add_row(str(row.rank), run_time(r.training_time_s), row.team, row.model, row.source,
                      options_text(row.train_args), figure(r.core_metric, ".4f"), figure(r.min_val_bpb, ".4f"),
                      f"${r.cost_usd:,.2f}", row.job)
    if not board.time_to_gpt2:
        table.add_row("-", Text("no run has beaten GPT-2's CORE yet", style="dim"), *(["-"] * 8))
    return table


def _bpb_rows(rows: list[BoardRow]) -> Table:
    table = Table(title="best val bpb per depth (full runs)", title_justify="left")
    for column in ("MODEL", "VAL BPB", "TEAM", "REPO@COMMIT", "OPTIONS", "GPU", "TIME", "COST", "JOB"):
        table.add_column(column, no_wrap=column != "OPTIONS")
    for row in rows:
        r = row.results
        table.add_row(row.model, figure(r.min_val_bpb, ".4f"), row.team, row.source, options_text(row.train_args),
                      row.gpu, run_time(r.training_time_s), f"${r.cost_usd:,.2f}", row.job)
    if not rows:
        table.add_row("-", Text("no full run with a val bpb yet", style="dim"), *(["-"] * 7))
    return table


def leaderboard_view(board: Leaderboard) -> Group:
    hint = Text("speedq status JOB shows a run; speedq compare JOB JOB... sets runs side by side", style="dim")
    return Group(_time_rows(board), _bpb_rows(board.best_bpb), hint)


def _metric(get: Callable[[RunResults], str]) -> Callable[[ComparedRun], str]:
    return lambda run: get(run.results) if run.results is not None else "-"


# One row per figure, in the order a speedrunner reads them.
COMPARED: list[tuple[str, Callable[[ComparedRun], str | Text]]] = [
    ("team", lambda run: run.team),
    ("state", lambda run: Text(run.state.value, style=STATE_STYLE[run.state])),
    ("model", lambda run: run.model),
    ("gpu", lambda run: run.gpu),
    ("training time", _metric(lambda r: run_time(r.training_time_s))),
    ("CORE", _metric(lambda r: figure(r.core_metric, ".4f"))),
    ("min val bpb", _metric(lambda r: figure(r.min_val_bpb, ".4f"))),
    ("steps", _metric(lambda r: figure(r.steps, ","))),
    ("tokens", _metric(lambda r: count(r.tokens))),
    ("MFU", _metric(lambda r: figure(r.mfu_pct, ".1f", "%"))),
    ("tok/s", _metric(lambda r: count(r.tokens_per_s))),
    ("GPU-hours", _metric(lambda r: f"{r.gpu_hours:.2f}")),
    ("cost", _metric(lambda r: f"${r.cost_usd:,.2f}")),
    ("beats GPT-2", _metric(lambda r: "yes" if r.beats_gpt2 else "no")),
    ("repo@commit", lambda run: run.source),
    ("options", lambda run: options_text(run.train_args)),
]


def compare_table(comparison: Comparison) -> Table:
    table = Table(title="speedq compare", title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    for run in comparison.runs:
        table.add_column(run.job, no_wrap=False)
    for label, cell in COMPARED:
        table.add_row(label, *(cell(run) for run in comparison.runs))
    return table
