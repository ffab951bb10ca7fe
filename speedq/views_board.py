"""How the leaderboard and a comparison look in a terminal: rich tables for `leaderboard` and
`compare` (the dashboard draws the same view models in speedq/static/board.js)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.console import Group
from rich.table import Table
from rich.text import Text

from speedq.schemas import BoardRow, ComparedRun, Comparison, Leaderboard, RunResults, TrainArgValue
from speedq.views import RESULT_FIGURES, STATE_STYLE, figure, run_time


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


# One row per figure: who ran it, its results as status shows them, then what was run.
COMPARED: list[tuple[str, Callable[[ComparedRun], str | Text]]] = [
    ("team", lambda run: run.team),
    ("state", lambda run: Text(run.state.value, style=STATE_STYLE[run.state])),
    ("model", lambda run: run.model),
    ("gpu", lambda run: run.gpu),
    *((label, _metric(shown)) for label, shown in RESULT_FIGURES),
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
