"""The HTTP API: speedq for people and tools without Redis credentials.

A thin layer over the producer, the store and accounting, as the CLI is: the same schemas
validate every input (a bad one is a 422 with the CLI's one line), the same functions do the
work. A bearer token names the team; a team writes only its own jobs and sees only the status
of other teams' jobs.
"""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ValidationError

from speedq import accounting, producer
from speedq import logs as run_logs
from speedq.backends import BackendError
from speedq.connection import RedisUnavailable, connect_for_requests
from speedq.schemas import (
    JobId,
    JobRecord,
    JobStatus,
    ListQuery,
    LogQuery,
    StatsQuery,
    SubmitRequest,
    TeamSettings,
    TeamStats,
    describe,
)
from speedq.store import JobNotFound, Store
from speedq.teams import authenticate


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class Problem(BaseModel):
    """Every error: one line, as the CLI prints it."""

    detail: str


class Submitted(BaseModel):
    created: bool  # False: an active job already held this run and is returned instead
    job: JobRecord


ERRORS = {
    401: {"model": Problem, "description": "Missing or wrong bearer token"},
    405: {"model": Problem, "description": "Method not allowed on this path (the Allow header lists those it takes)"},
    422: {"model": Problem, "description": "Invalid input, a body that is not JSON (UTF-8) included"},
    503: {"model": Problem, "description": "Redis unavailable"},
}
JOB_ERRORS = {**ERRORS, 404: {"model": Problem, "description": "No such job"}}
WRITE_ERRORS = {
    **JOB_ERRORS,
    403: {"model": Problem, "description": "Another team's job"},
    409: {"model": Problem, "description": "Not possible in the job's state"},
    429: {"model": Problem, "description": "Over a team quota"},
}

# Producer refusals by kind; anything else the producer refuses is a conflict with the state.
_REFUSALS = {producer.NotYourJob: 403, producer.QuotaExceeded: 429}


router = APIRouter(prefix="/v1")
bearer = HTTPBearer(auto_error=False, description="The team's token from `speedq team add`")


def _store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(_store)]


def _team(store: StoreDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> TeamSettings:
    if creds is None or not creds.credentials:
        raise ApiError(401, "missing bearer token")
    team = authenticate(store, creds.credentials)
    if team is None:
        raise ApiError(401, "invalid token")
    return team


Team = Annotated[TeamSettings, Depends(_team)]


def _job(store: Store, job_id: str) -> JobRecord:
    try:
        return store.get(job_id)
    except JobNotFound:
        raise ApiError(404, f"no job {job_id}") from None


def _own(record: JobRecord, team: TeamSettings) -> JobRecord:
    if record.spec.team != team.name:
        raise ApiError(403, f"job {record.id} belongs to team {record.spec.team!r}, not {team.name!r}")
    return record


def _view(record: JobRecord, team: TeamSettings) -> JobRecord | JobStatus:
    return record if record.spec.team == team.name else JobStatus.of(record)


@router.post("/jobs", status_code=201, response_model=Submitted, responses=WRITE_ERRORS)
def submit(body: SubmitRequest, team: Team, store: StoreDep) -> Submitted:
    """Queue a speedrun for the token's team (a body `team` must be that team)."""
    if body.team is not None and body.team != team.name:
        raise ApiError(403, f"this token belongs to team {team.name!r}; it cannot submit for {body.team!r}")
    done = producer.submit(store.conn, body.spec_for(team.name))
    return Submitted(created=done.created, job=done.record)


@router.get("/jobs/{job_id}", response_model=JobRecord | JobStatus, responses=JOB_ERRORS)
def get_job(job_id: JobId, team: Team, store: StoreDep) -> JobRecord | JobStatus:
    """One job: the whole record for your team's, the status for another team's."""
    return _view(_job(store, job_id), team)


@router.get("/jobs", response_model=list[JobRecord | JobStatus], responses=ERRORS)
def list_jobs(query: Annotated[ListQuery, Query()], team: Team, store: StoreDep) -> list[JobRecord | JobStatus]:
    """Jobs newest first; other teams' show status only."""
    return [_view(r, team) for r in store.list(query)]


LOG_ERRORS = {**WRITE_ERRORS, 502: {"model": Problem, "description": "The backend keeping the log (Modal) cannot be reached"}}


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse, responses=LOG_ERRORS)
def logs(job_id: JobId, query: Annotated[LogQuery, Query()], team: Team, store: StoreDep) -> str:
    """Your team's job's log ('' before its run starts)."""
    return run_logs.read(_own(_job(store, job_id), team), query.tail)


@router.post("/jobs/{job_id}/cancel", response_model=JobRecord, responses=WRITE_ERRORS)
def cancel(job_id: JobId, team: Team, store: StoreDep) -> JobRecord:
    """Cancel your team's job: at once if queued, within a poll if running."""
    return producer.cancel(store.conn, _job(store, job_id).id, team.name)


@router.post("/jobs/{job_id}/retry", response_model=JobRecord, responses=WRITE_ERRORS)
def retry(job_id: JobId, team: Team, store: StoreDep) -> JobRecord:
    """Run your team's failed or cancelled job again, resuming from its checkpoints."""
    return producer.retry(store.conn, _job(store, job_id).id, team.name)


@router.get("/stats", response_model=list[TeamStats], responses=ERRORS)
def stats(query: Annotated[StatsQuery, Query()], team: Team, store: StoreDep) -> list[TeamStats]:
    """Per team: jobs by state, GPU-hours, estimated cost, queue waits."""
    return accounting.stats(store, query.team)


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

    app.state.store = Store(conn if conn is not None else connect_for_requests())
    app.include_router(router)
    app.include_router(dashboard.router)
    app.include_router(metrics.router)
    _install_error_handlers(app)
    return app


def _problem(code: int, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse(status_code=code, content={"detail": detail}, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status_code, exc.detail)

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

    @app.exception_handler(producer.ProducerError)
    async def refused(_: Request, exc: producer.ProducerError) -> JSONResponse:
        return _problem(next((c for kind, c in _REFUSALS.items() if isinstance(exc, kind)), 409), str(exc))

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return _problem(503, f"Redis unavailable: {exc}")

    @app.exception_handler(RedisUnavailable)
    async def no_redis(_: Request, exc: RedisUnavailable) -> JSONResponse:
        return _problem(503, str(exc))

    @app.exception_handler(BackendError)
    async def backend_failed(_: Request, exc: BackendError) -> JSONResponse:
        return _problem(502, f"backend: {exc}")
