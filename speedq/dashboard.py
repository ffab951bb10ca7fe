"""The web dashboard: one static page at `/` and the read-only JSON it draws from.

Anyone who can reach the API sees every team's jobs at the status-only level (state, progress,
loss curve, attempts' outcomes): nothing there is sensitive, and a shared queue is easier to
share when people can see what is ahead of them. The page asks the token-protected /v1
endpoints for the rest (a job's spec and log tail) with the token a person types into it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from speedq.api import ERRORS, JOB_ERRORS, StoreDep, _job
from speedq.schemas import Board, JobId, JobOverview, JobPage, ListQuery, TeamJobs

router = APIRouter()
PAGE = files("speedq") / "static" / "dashboard.html"


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
    record = _job(store, job_id)
    return JobPage(**JobOverview.of(record).model_dump(), loss=store.loss_history(record.id))
