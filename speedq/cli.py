"""The `speedq` command: a thin layer over `speedq.client.Client` (and the worker, teams).

Every value a user types goes through `schemas` before anything touches Redis, and every
failure a user can cause is a `speedq.errors.SpeedqError`: one line on stderr and its exit code,
never a traceback. Imports stay light (no RQ, modal, fastapi or worker) so `status` is fast.
"""

# No `from __future__ import annotations` here: typer reads every command's signature on each run,
# and string annotations cost it an eval apiece (about 3.5 ms of every `speedq` call, issue 11).
import json
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from typer.exceptions import Abort, Exit, TyperException

from speedq import config, settings, worker_cli
from speedq.client import Client, validated
from speedq.entry import fail as _fail
from speedq.errors import InvalidInput, ProducerError, SpeedqError
from speedq.schemas import describe
from speedq.terminal import err, out, print_json

if TYPE_CHECKING:

    from speedq.schemas import TeamLimits, TeamSettings

app = typer.Typer(
    name="speedq",
    help="A shared job queue for nanochat speedruns on Modal GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _client() -> Client:
    return Client()


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
TeamOpt = Annotated[str, typer.Option("--team", help="Your team (a slug).")]


@app.command()
def submit(
    team: TeamOpt,
    model: Annotated[str | None, typer.Option(help=f"d<depth> [default: {config.DEFAULT_MODEL}]")] = None,
    repo: Annotated[str | None, typer.Option(
        "--repo", help="A nanochat fork's https URL [default: karpathy's; hosts: setting SPEEDQ_REPO_HOSTS].")] = None,
    repo_ref: Annotated[str | None, typer.Option("--repo-ref", help="Branch, tag or commit of the repository.")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help=f"A {config.SMOKE_STEPS}-step smoke test.")] = False,
    force_restart: Annotated[bool, typer.Option("--force-restart", help="Wipe the run directory first.")] = False,
    gpu: Annotated[str | None, typer.Option(help=f"TYPE[:COUNT] [default: {config.DEFAULT_GPU}]")] = None,
    run_name: Annotated[str | None, typer.Option(
        "--run-name", help="[default: the model, or <model>-smoke; a fork's: <owner>-<repo>-<model>]")] = None,
    priority: Annotated[str | None, typer.Option(help="high, normal or low.")] = None,
    backend: Annotated[str | None, typer.Option(help="modal, local or sim [default: setting SPEEDQ_BACKEND].")] = None,
    max_attempts: Annotated[str | None, typer.Option("--max-attempts", help="1 to 10.")] = None,
    timeout: Annotated[str | None, typer.Option(help="Per attempt: seconds or 90m, 24h (at most 24h).")] = None,
    save_every: Annotated[str | None, typer.Option("--save-every", help="Checkpoint every N steps.")] = None,
    train_arg: Annotated[list[str] | None, typer.Option(
        "--train-arg",
        help="A base_train option KEY=VALUE without dashes (max-seq-len=128; a bare fp8 is true). Repeatable.",
    )] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Store nothing: show the resolved commit, steps, estimated GPU-hours and cost, budget left.",
    )] = False,
    no_preflight: Annotated[bool, typer.Option(
        "--no-preflight",
        help=f"Launch a multi-GPU full run at once, without first running {config.PREFLIGHT_STEPS} steps on one GPU.",
    )] = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate and enqueue a speedrun; prints the job id last."""
    given = {
        "team": team, "model": model, "repo": repo, "repo_ref": repo_ref, "gpu": gpu, "run_name": run_name,
        "priority": priority, "backend": settings.get().backend if backend is None else backend,
        "max_attempts": max_attempts,
        "attempt_timeout_s": timeout, "save_every": save_every, "train_args": train_arg,
    }
    fields: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if no_preflight:
        fields["preflight"] = False
    values = {"mode": "smoke" if smoke else "full", "force_restart": force_restart, **fields}
    if dry_run:
        _preview(values, as_json)
        return
    done = _client().submit(values)
    job, spec = done.job, done.job.spec
    if not done.created:
        err().print(f"run {spec.run_key} already has active job {job.id} ({job.state.value}); not submitting another")
    if as_json:
        print_json(job)
    else:
        if done.created:
            err().print(f"queued {spec.run_key}: {job.source} {spec.model} {spec.mode} on {spec.gpu} "
                        f"via {spec.backend}")
        print(job.id)


def _preview(values: "Mapping[str, object]", as_json: bool) -> None:
    """The preview, then the submit's refusal (if it would be refused) as its one line and exit 3."""
    from speedq.errors import QuotaExceeded

    shown = _client().preview(values)
    if as_json:
        print_json(shown)
    else:
        from speedq.views import preview_panel

        out().print(preview_panel(shown))
    if shown.refusal is not None:
        raise QuotaExceeded(shown.refusal)  # every refusal a submit can meet here exits 3


@app.command()
def status(job: str, as_json: JsonFlag = False) -> None:
    """Show one job: state, progress, checkpoint, log pointer, attempts."""
    from speedq.show import show

    show(_client(), job, as_json)


@app.command("ls")
def list_jobs(
    team: Annotated[str | None, typer.Option(help="Only this team's jobs.")] = None,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[str, typer.Option(help="At most this many, newest first.")] = "20",
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until every listed job has ended.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    from speedq.views import jobs_table

    client = _client()
    records = client.list(team, state, limit)
    if as_json:
        print_json(records)
        return
    if not watch:
        out().print(jobs_table(records))
        return
    from rich.live import Live

    with Live(jobs_table(records), console=out(), refresh_per_second=4) as live:
        while not all(r.state.terminal for r in records):
            time.sleep(0.5)
            records = client.list(team, state, limit)
            live.update(jobs_table(records, title=f"speedq jobs (refreshing; {time.strftime('%H:%M:%S')})"))


@app.command()
def logs(
    job: str,
    tail: Annotated[str | None, typer.Option(help="Only the last N lines.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print a run's log, from where its record says it is."""
    from speedq import logs as run_logs
    from speedq.schemas import LogQuery

    lines = validated(LogQuery, {"tail": tail}).tail  # a bad --tail is refused before any read
    client = _client()
    record = client.get(job)
    if record.log is None and not follow:
        raise ProducerError(f"job {record.id} is {record.state.value} and has no log yet")
    follower = run_logs.Follower()
    if lines is not None or not follow:
        sys.stdout.write(client.logs(record.id, lines))
        if not follow:
            return
        follower.skip_to_end(record)
    with err().status(f"following {record.id} ({record.state.value})") as spinner:
        while True:
            record = client.get(record.id)
            sys.stdout.write(follower.new(record))
            sys.stdout.flush()
            spinner.update(f"following {record.id} ({record.state.value})")
            if record.state.terminal:  # read after the state: the log is whole
                break
            time.sleep(settings.get().poll_interval)
    err().print(f"job {record.id} {record.state.value}")


@app.command()
def cancel(job: str, team: TeamOpt, as_json: JsonFlag = False) -> None:
    """Cancel a job of your team: at once if queued, within a poll if running."""
    record = _client().cancel(job, team)
    if as_json:
        print_json(record)
    else:
        out().print(f"{'cancelled' if record.state.terminal else 'cancelling'} {record.id}")


@app.command()
def retry(job: str, team: TeamOpt, as_json: JsonFlag = False) -> None:
    """Run a failed or cancelled job of your team again, resuming from its checkpoints."""
    record = _client().retry(job, team)
    if as_json:
        print_json(record)
    else:
        out().print(f"re-queued {record.id}")


# Parsed by worker_cli alone (`speedq.entry` sends `speedq worker` there before typer is imported);
# listed here for `speedq --help` and for callers of this module's main.
@app.command(
    help=worker_cli.DESCRIPTION + " Options: `speedq worker --help`.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def worker(ctx: typer.Context) -> None:
    worker_cli.main(ctx.args)


team_app = typer.Typer(help="Teams: limits and API tokens.", no_args_is_help=True)
app.add_typer(team_app, name="team")

MaxQueuedOpt = Annotated[str | None, typer.Option("--max-queued", help="Queued jobs at most ('none': no limit).")]
MaxRunningOpt = Annotated[str | None, typer.Option("--max-running", help="Jobs running at once at most.")]
BudgetOpt = Annotated[str | None, typer.Option("--gpu-hours-budget", help="GPU-hours the team may use.")]
WebhookOpt = Annotated[
    str | None, typer.Option("--webhook", help="URL to notify on success, failure, retry ('none': off).")
]


def _team_change(
    name: str, max_queued: str | None, max_running: str | None, budget: str | None, webhook: str | None
) -> "tuple[str, TeamLimits]":
    """The team name and the settings given, validated."""
    from speedq.schemas import TeamLimits, TeamRef

    given = {"max_queued": max_queued, "max_running": max_running, "gpu_hours_budget": budget, "webhook_url": webhook}
    return TeamRef(team=name).team, TeamLimits.model_validate({k: v for k, v in given.items() if v is not None})


def _show_team(team: "TeamSettings", token: str | None, as_json: bool) -> None:
    from speedq.views import teams_table

    if as_json:
        document = team.model_dump(mode="json", exclude={"token_hash"}) | ({"token": token} if token else {})
        sys.stdout.write(json.dumps(document) + "\n")
        return
    out().print(teams_table([team]))
    if token:
        note = "the team's API token (shown this once; `team set --rotate-token` makes a new one):"
        err().print(note, soft_wrap=True)
        print(token)


@team_app.command("add")
def team_add(
    name: str,
    max_queued: MaxQueuedOpt = None,
    max_running: MaxRunningOpt = None,
    gpu_hours_budget: BudgetOpt = None,
    webhook: WebhookOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a team with its limits; prints its API token last (shown once)."""
    from speedq.teams import add_team

    change = _team_change(name, max_queued, max_running, gpu_hours_budget, webhook)
    team_settings, token = add_team(_client().store, *change)
    _show_team(team_settings, token, as_json)


@team_app.command("set")
def team_set(
    name: str,
    max_queued: MaxQueuedOpt = None,
    max_running: MaxRunningOpt = None,
    gpu_hours_budget: BudgetOpt = None,
    webhook: WebhookOpt = None,
    rotate_token: Annotated[
        bool, typer.Option("--rotate-token", help="Replace the API token; prints the new one last.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Change an added team's limits (the ones given) or its token."""
    from speedq.teams import set_team

    team, limits = _team_change(name, max_queued, max_running, gpu_hours_budget, webhook)
    team_settings, token = set_team(_client().store, team, limits, rotate_token)
    _show_team(team_settings, token, as_json)


@team_app.command("ls")
def team_ls(as_json: JsonFlag = False) -> None:
    """Every team with a queue: added ones with their limits, and open ones seen through submits."""
    from speedq.views import teams_table

    teams = _client().store.teams()
    if as_json:
        print_json(teams, exclude={"token_hash"})
    else:
        out().print(teams_table(teams))


@app.command()
def stats(
    team: Annotated[str | None, typer.Option(help="Only this team.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per team: jobs by state, GPU-hours, estimated cost, queue wait (median, p95)."""
    from speedq.views import stats_table

    figures = _client().stats(team)
    if as_json:
        print_json(figures)
    else:
        out().print(stats_table(figures))


@app.command()
def leaderboard(
    model: Annotated[str | None, typer.Option(help="Only this model (d<depth>).")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's runs.")] = None,
    limit: Annotated[str, typer.Option(help="At most this many time-to-GPT-2 entries.")] = "50",
    as_json: JsonFlag = False,
) -> None:
    """Time to GPT-2 (CORE above GPT-2's on 8xH100, fastest first) and the best val bpb per depth."""
    from speedq.views_board import leaderboard_view

    board = _client().leaderboard(model, team, limit)
    if as_json:
        print_json(board)
    else:
        out().print(leaderboard_view(board))


@app.command()
def compare(
    jobs: Annotated[list[str], typer.Argument(help="Job ids, e.g. sq-7 sq-9.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """Jobs' results side by side: training time, CORE, val bpb, throughput, cost, code and options."""
    from speedq.views_board import compare_table

    comparison = _client().compare(*jobs)
    if as_json:
        print_json(comparison)
    else:
        out().print(compare_table(comparison))


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[str, typer.Option(help="Port to listen on.")] = "8000",
) -> None:
    """Serve the HTTP API (FastAPI; OpenAPI at /openapi.json, docs at /docs)."""
    from speedq.schemas import ApiOptions

    options = ApiOptions(host=host, port=port)  # type: ignore[arg-type]
    try:
        import uvicorn

        from speedq.api import create_app
    except ImportError:
        raise SpeedqError("the API needs its extra: pip install 'speedq[api]'") from None
    from speedq.connection import connect_checked, connect_for_requests, redis_url

    url = redis_url()
    connect_checked(url)  # a wrong URL fails here, in one line, not on the first request
    err().print(f"speedq API on http://{options.host}:{options.port} (docs at /docs)")
    uvicorn.run(create_app(connect_for_requests(url)), host=options.host, port=options.port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except ValidationError as exc:
        _fail(describe(exc), InvalidInput.exit_code)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: unknown option, missing value
        _fail(exc.format_message(), InvalidInput.exit_code)
    except Abort:
        _fail("aborted", 130)
    except SpeedqError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
