"""The web dashboard: one static page at `/` (its scripts under /static/) and the read-only JSON
it draws from: the jobs board, job pages, the leaderboard and comparisons of runs.

Anyone who can reach the API sees every team's jobs at the status-only level (state, progress,
loss curve, attempts' outcomes): nothing there is sensitive, and a shared queue is easier to
share when people can see what is ahead of them. The page asks the token-protected /v1
endpoints for the rest (a job's spec and log tail) with the token a person types into it.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from speedq.api import ERRORS, JOB_ERRORS, StoreDep
from speedq.leaderboard import comparison, leaderboard
from speedq.schemas import (
    Board,
    CompareQuery,
    Comparison,
    JobId,
    JobOverview,
    JobPage,
    Leaderboard,
    LeaderboardQuery,
    ListQuery,
    TeamJobs,
)

router = APIRouter()
STATIC = files("speedq") / "static"
PAGE = STATIC / "dashboard.html"
SCRIPT_NAME = re.compile(r"[a-z_]+\.js")  # a plain name: nothing a request names escapes static/


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/dashboard/api/jobs", response_model=Board, responses=ERRORS, tags=["dashboard"])
def board(query: Annotated[ListQuery, Query()], store: StoreDep) -> Board:
    """Every team's job counts by state, and the newest jobs (status only; no token needed)."""
    names = [query.team] if query.team else store.team_names()
    return Board(
        teams=[TeamJobs(team=name, jobs=store.counts(name)) for name in names],
        jobs=[JobOverview.of(r) for r in store.list(query)],
    )


@router.get("/dashboard/api/jobs/{job_id}", response_model=JobPage, responses=JOB_ERRORS, tags=["dashboard"])
def job_page(job_id: JobId, store: StoreDep) -> JobPage:
    """One job's status, attempts and loss curve (status only; no token needed)."""
    record = store.get(job_id)
    return JobPage(**JobOverview.of(record).model_dump(), loss=store.loss_history(record.id))


@router.get("/static/{name}", include_in_schema=False)
def script(name: str) -> Response:
    """The page's scripts (plain JS, no build step), from speedq/static/ only."""
    source = STATIC / name
    if not SCRIPT_NAME.fullmatch(name) or not source.is_file():
        raise HTTPException(404, f"no script {name}")
    return Response(source.read_text(encoding="utf-8"), media_type="text/javascript")


@router.get("/dashboard/api/leaderboard", response_model=Leaderboard, responses=ERRORS, tags=["dashboard"])
def board_page(query: Annotated[LeaderboardQuery, Query()], store: StoreDep) -> Leaderboard:
    """The leaderboard, as /v1/leaderboard (no token needed: its entries are published runs)."""
    return leaderboard(store, query)


@router.get("/dashboard/api/compare", response_model=Comparison, responses=JOB_ERRORS, tags=["dashboard"])
def compare_page(query: Annotated[CompareQuery, Query()], store: StoreDep) -> Comparison:
    """Runs side by side with their loss curves (no token: options only of runs with results)."""
    return comparison(store, query, status_only=True, loss=True)
