"""The `speedq` command: a thin layer over the producer, the store and the worker.

Every value a user types goes through `schemas` before anything touches Redis, and every
failure a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Optional

import typer
from typer.exceptions import Abort, Exit, TyperException
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.live import Live
from rich.text import Text

from speedq import config
from speedq.schemas import JobRecord, JobRef, JobSpec, ListQuery, describe

app = typer.Typer(
    name="speedq",
    help="A shared job queue for nanochat speedruns on Modal GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (tests, `| less`) gets wide tables instead of squeezed columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

EXIT_INVALID = 2


class Failure(Exception):
    """An error for the user, in one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _store():  # type: ignore[no-untyped-def]
    from speedq.connection import connect_checked
    from speedq.store import Store

    return Store(connect_checked())


def _job_id(value: str) -> str:
    return JobRef(id=value).id


def _get(store, job_id: str) -> JobRecord:  # type: ignore[no-untyped-def]
    from speedq.store import JobNotFound

    try:
        return store.get(_job_id(job_id))
    except JobNotFound:
        raise Failure(f"no job {job_id}") from None


def _print_json(data: BaseModel | list[BaseModel]) -> None:
    if isinstance(data, list):
        text = json.dumps([d.model_dump(mode="json") for d in data])
    else:
        text = data.model_dump_json()
    sys.stdout.write(text + "\n")


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
TeamOpt = Annotated[str, typer.Option("--team", help="Your team (a slug).")]


@app.command()
def submit(
    team: TeamOpt,
    model: Annotated[Optional[str], typer.Option(help=f"d<depth> [default: {config.DEFAULT_MODEL}]")] = None,
    repo_ref: Annotated[Optional[str], typer.Option("--repo-ref", help="nanochat branch, tag or commit.")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help=f"A {config.SMOKE_STEPS}-step smoke test.")] = False,
    force_restart: Annotated[bool, typer.Option("--force-restart", help="Wipe the run directory first.")] = False,
    gpu: Annotated[Optional[str], typer.Option(help=f"TYPE[:COUNT] [default: {config.DEFAULT_GPU}]")] = None,
    run_name: Annotated[Optional[str], typer.Option("--run-name", help="[default: the model, or <model>-smoke]")] = None,
    priority: Annotated[Optional[str], typer.Option(help="high, normal or low.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="modal, local or sim.", envvar="SPEEDQ_BACKEND")] = None,
    max_attempts: Annotated[Optional[str], typer.Option("--max-attempts", help="1 to 10.")] = None,
    timeout: Annotated[Optional[str], typer.Option(help="Per attempt: seconds or 90m, 24h (at most 24h).")] = None,
    save_every: Annotated[Optional[str], typer.Option("--save-every", help="Checkpoint every N steps.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate and enqueue a speedrun; prints the job id last."""
    from speedq import producer

    given = {
        "team": team, "model": model, "repo_ref": repo_ref, "gpu": gpu, "run_name": run_name,
        "priority": priority, "backend": backend, "max_attempts": max_attempts,
        "attempt_timeout_s": timeout, "save_every": save_every,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    spec = JobSpec(mode="smoke" if smoke else "full", force_restart=force_restart, **fields)
    done = producer.submit(_store().conn, spec)
    if not done.created:
        err.print(f"run {spec.run_key} already has active job {done.record.id} ({done.record.state.value}); not submitting another")
    if as_json:
        _print_json(done.record)
    else:
        if done.created:
            err.print(f"queued {spec.run_key}: {spec.model} {spec.mode} on {spec.gpu} via {spec.backend}")
        print(done.record.id)


@app.command()
def status(job: str, as_json: JsonFlag = False) -> None:
    """Show one job: state, progress, checkpoint, log pointer, attempts."""
    from speedq.views import job_detail

    record = _get(_store(), job)
    if as_json:
        _print_json(record)
    else:
        out.print(job_detail(record))


@app.command("ls")
def list_jobs(
    team: Annotated[Optional[str], typer.Option(help="Only this team's jobs.")] = None,
    state: Annotated[Optional[str], typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[str, typer.Option(help="At most this many, newest first.")] = "20",
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until every listed job has ended.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    from speedq.views import jobs_table

    query = ListQuery(team=team, state=state, limit=limit)  # type: ignore[arg-type]
    store = _store()
    records = store.list(query)
    if as_json:
        _print_json(records)
        return
    if not watch:
        out.print(jobs_table(records))
        return
    with Live(jobs_table(records), console=out, refresh_per_second=4) as live:
        while not all(r.state.terminal for r in records):
            time.sleep(0.5)
            records = store.list(query)
            live.update(jobs_table(records, title=f"speedq jobs (refreshing; {time.strftime('%H:%M:%S')})"))


@app.command()
def logs(
    job: str,
    tail: Annotated[Optional[str], typer.Option(help="Only the last N lines.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a run's log, from wherever its backend keeps it."""
    from speedq.backends import get_backend
    from speedq.schemas import LogQuery

    query = LogQuery(tail=tail)  # type: ignore[arg-type]
    store = _store()
    record = _get(store, job)
    backend = get_backend(record.spec.backend)
    if record.run_dir is None and not follow:
        raise Failure(f"job {record.id} is {record.state.value} and has no log yet")
    text = backend.read_log(record, query.tail) if record.run_dir else ""
    sys.stdout.write(text)
    if not follow:
        return
    shown = len(backend.read_log(record, None)) if record.run_dir else 0
    with err.status(f"following {record.id} ({record.state.value})") as spinner:
        while True:
            record = store.get(record.id)
            if record.run_dir:
                full = backend.read_log(record, None)
                sys.stdout.write(full[shown:])
                sys.stdout.flush()
                shown = len(full)
            spinner.update(f"following {record.id} ({record.state.value})")
            if record.state.terminal:
                break
            time.sleep(config.poll_interval_s())
    err.print(f"job {record.id} {record.state.value}")


@app.command()
def cancel(job: str, team: TeamOpt, as_json: JsonFlag = False) -> None:
    """Cancel a job of your team: at once if queued, within a poll if running."""
    from speedq import producer

    record = _team_action(producer.cancel, job, team, as_json)
    if not as_json:
        out.print(f"{'cancelled' if record.state.terminal else 'cancelling'} {record.id}")


@app.command()
def retry(job: str, team: TeamOpt, as_json: JsonFlag = False) -> None:
    """Run a failed or cancelled job of your team again, resuming from its checkpoints."""
    from speedq import producer

    record = _team_action(producer.retry, job, team, as_json)
    if not as_json:
        out.print(f"re-queued {record.id}")


def _team_action(action, job: str, team: str, as_json: bool) -> JobRecord:  # type: ignore[no-untyped-def]
    store = _store()
    record = action(store.conn, _get(store, job).id, JobSpec.model_validate({"team": team}).team)
    if as_json:
        _print_json(record)
    return record


@app.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Quit when the queues are empty.")] = False,
    backend: Annotated[Optional[list[str]], typer.Option(help="Serve jobs for this backend (repeatable).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Worker name [default: host.pid].")] = None,
) -> None:
    """Run an RQ worker for speedq's queues."""
    from speedq.schemas import WorkerOptions
    from speedq.worker import run_worker

    options = WorkerOptions(backends=backend or [os.environ.get("SPEEDQ_BACKEND", config.DEFAULT_BACKEND)])
    store = _store()
    err.print(f"speedq worker serving {', '.join(options.backends)} jobs" + (" (burst)" if burst else ""))
    run_worker(store.conn, list(options.backends), burst=burst, name=name)


def main(argv: list[str] | None = None) -> None:
    from speedq.backends.base import BackendError
    from speedq.connection import RedisUnavailable
    from speedq.producer import ProducerError

    try:
        app(args=argv, standalone_mode=False)
    except ValidationError as exc:
        _fail(describe(exc), EXIT_INVALID)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: unknown option, missing value
        _fail(exc.format_message(), EXIT_INVALID)
    except Abort:
        _fail("aborted", 130)
    except Failure as exc:
        _fail(str(exc), exc.code)
    except ProducerError as exc:
        _fail(str(exc), exc.exit_code)
    except (RedisUnavailable, BackendError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _fail(message: str, code: int) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
