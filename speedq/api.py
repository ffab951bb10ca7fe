"""The HTTP API: speedq for people and tools without Redis credentials.

A thin layer over `speedq.client.Client`, as the CLI is: the same schemas validate every input
(a bad one is a 422 with the CLI's one line), the same methods do the work, and every error maps
to its status through `speedq.errors` (each error class carries its own). A bearer token names
the team; a team writes only its own jobs and sees only the status
of other teams' jobs.
"""

from __future__ import annotations

from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from speedq import errors
from speedq.client import Client
from speedq.connection import connect_for_requests
from speedq.schemas import (
    CompareQuery,
    Comparison,
    JobId,
    JobRecord,
    JobSpec,
    JobStatus,
    Leaderboard,
    LeaderboardQuery,
    ListQuery,
    LogQuery,
    Preview,
    StatsQuery,
    SubmitRequest,
    Submitted,
    TeamSettings,
    TeamStats,
    describe,
)
from speedq.store import Store
from speedq.teams import authenticate


class Problem(BaseModel):
    """Every error: one line, as the CLI prints it."""

    detail: str


# Routing's own answer (Starlette), not an error of speedq's: a method the path does not take.
METHOD_NOT_ALLOWED = {
    "model": Problem, "description": "method not allowed on this path (the Allow header lists those it takes)",
}


def responses(*kinds: type[errors.SpeedqError]) -> dict[int | str, dict[str, Any]]:
    """The documented error statuses of a route, from the error classes it can raise."""
    table: dict[int | str, dict[str, Any]] = {405: METHOD_NOT_ALLOWED}
    every: tuple[type[errors.SpeedqError], ...] = (errors.InvalidInput, errors.Unauthorized, errors.RedisUnavailable)
    for kind in (*every, *kinds):
        table[kind.http_status] = {"model": Problem, "description": kind.meaning}
    return table


ERRORS = responses()
JOB_ERRORS = responses(errors.JobNotFound)
WRITE_ERRORS = responses(
    errors.JobNotFound, errors.NotYourJob, errors.ProducerError, errors.QuotaExceeded, errors.BudgetExceeded
)
PREVIEW_ERRORS = responses(errors.NotYourJob)
LOG_ERRORS = responses(errors.JobNotFound, errors.NotYourJob, errors.BackendError)


router = APIRouter(prefix="/v1")
bearer = HTTPBearer(auto_error=False, description="The team's token from `speedq team add`")


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


ClientDep = Annotated[Client, Depends(_client)]


def _store(client: ClientDep) -> Store:
    return client.store


StoreDep = Annotated[Store, Depends(_store)]  # the dashboard's and metrics' reads


def _team(client: ClientDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TeamSettings:
    if creds is None or not creds.credentials:
        raise errors.Unauthorized("missing bearer token")
    team = authenticate(client.store, creds.credentials)
    if team is None:
        raise errors.Unauthorized("invalid token")
    return team


Team = Annotated[TeamSettings, Depends(_team)]


def _view(record: JobRecord, team: TeamSettings) -> JobRecord | JobStatus:
    return record if record.spec.team == team.name else JobStatus.of(record)


@router.post("/jobs", status_code=201, response_model=Submitted, responses=WRITE_ERRORS)
def submit(body: SubmitRequest, team: Team, client: ClientDep) -> Submitted:
    """Queue a speedrun for the token's team (a body `team` must be that team)."""
    return client.submit(_spec(body, team))


def _spec(body: SubmitRequest, team: TeamSettings) -> JobSpec:
    if body.team is not None and body.team != team.name:
        raise errors.NotYourJob(f"this token belongs to team {team.name!r}; it cannot submit for {body.team!r}")
    return body.spec_for(team.name)


@router.post("/jobs/preview", response_model=Preview, responses=PREVIEW_ERRORS)
def preview(body: SubmitRequest, team: Team, client: ClientDep) -> Preview:
    """What `POST /v1/jobs` with this body would do, storing nothing: the resolved commit, the
    step count, the estimated GPU-hours and cost, the team's budget left, and `refusal` (the
    submit's refusal line now, or null)."""
    return client.preview(_spec(body, team))


@router.get("/jobs/{job_id}", response_model=JobRecord | JobStatus, responses=JOB_ERRORS)
def get_job(job_id: JobId, team: Team, client: ClientDep) -> JobRecord | JobStatus:
    """One job: the whole record for your team's, the status for another team's."""
    return _view(client.get(job_id), team)


@router.get("/jobs", response_model=list[JobRecord | JobStatus], responses=ERRORS)
def list_jobs(query: Annotated[ListQuery, Query()], team: Team, client: ClientDep) -> list[JobRecord | JobStatus]:
    """Jobs newest first; other teams' show status only."""
    return [_view(r, team) for r in client.list(query.team, query.state, query.limit)]


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse, responses=LOG_ERRORS)
def logs(job_id: JobId, query: Annotated[LogQuery, Query()], team: Team, client: ClientDep) -> str:
    """Your team's job's log ('' before its run starts)."""
    return client.logs(job_id, query.tail, team=team.name)


@router.post("/jobs/{job_id}/cancel", response_model=JobRecord, responses=WRITE_ERRORS)
def cancel(job_id: JobId, team: Team, client: ClientDep) -> JobRecord:
    """Cancel your team's job: at once if queued, within a poll if running."""
    return client.cancel(job_id, team.name)


@router.post("/jobs/{job_id}/retry", response_model=JobRecord, responses=WRITE_ERRORS)
def retry(job_id: JobId, team: Team, client: ClientDep) -> JobRecord:
    """Run your team's failed or cancelled job again, resuming from its checkpoints."""
    return client.retry(job_id, team.name)


@router.get("/stats", response_model=list[TeamStats], responses=ERRORS)
def stats(query: Annotated[StatsQuery, Query()], team: Team, client: ClientDep) -> list[TeamStats]:
    """Per team: jobs by state, GPU-hours, estimated cost, queue waits."""
    return client.stats(query.team)


@router.get("/leaderboard", response_model=Leaderboard, responses=ERRORS)
def leaderboard(query: Annotated[LeaderboardQuery, Query()], team: Team, client: ClientDep) -> Leaderboard:
    """Time to GPT-2 (CORE above GPT-2's on 8xH100, fastest first) and the best val bpb per
    depth; every team's entries, each with its repository, commit, options and results."""
    return client.leaderboard(query.model, query.team, query.limit)


@router.get("/compare", response_model=Comparison, responses=JOB_ERRORS)
def compare(query: Annotated[CompareQuery, Query()], team: Team, client: ClientDep) -> Comparison:
    """Jobs' results side by side (`?jobs=sq-1&jobs=sq-2`); another team's run without results
    shows its status only."""
    return client.compare(*query.jobs, viewer=team.name)


def create_app(conn: redis.Redis | None = None) -> FastAPI:
    app = FastAPI(
        title="speedq",
        summary="A shared job queue for nanochat speedruns",
        version="1",
        description="Authenticate with your team's token: `Authorization: Bearer <token>` "
        "(`speedq team add` prints it once).",
    )
    # Imported here: both build on this module's dependencies (the store, the 404 lookup).
    from speedq import dashboard, metrics

    app.state.client = Client(conn if conn is not None else connect_for_requests())
    app.include_router(router)
    app.include_router(dashboard.router)
    app.include_router(metrics.router)
    _install_error_handlers(app)
    return app


def _problem(code: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse(status_code=code, content={"detail": detail}, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.SpeedqError)
    async def speedq_error(_: Request, exc: errors.SpeedqError) -> JSONResponse:
        return _problem(exc.http_status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette answers 400 for a body it cannot parse (not UTF-8, nested too deep): that is
        # invalid input like any other, so it is the documented 422.
        if exc.status_code == 400:
            return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid body: not a JSON document in UTF-8")
        response = _problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, describe(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def invalid_value(_: Request, exc: ValidationError) -> JSONResponse:
        return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, describe(exc))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return _problem(errors.RedisUnavailable.http_status, f"Redis unavailable: {exc}")
