"""Cost preview and budget reservation (issue 12): `submit --dry-run`, `POST /v1/jobs/preview`
and `Client.preview` store nothing and show the resolved commit, nanochat's step count, the
estimated GPU-hours and cost (from the team's past runs, else the stated table) and the budget
left; a submit reserves its estimate, so no run takes a team over its budget."""

from __future__ import annotations

import json
import math
import threading

import pytest
import redis
from fastapi.testclient import TestClient

from speedq import config
from speedq.api import create_app
from speedq.client import Client
from speedq.errors import BudgetExceeded
from speedq.gpu import nanochat
from speedq.keys import Keys
from speedq.schemas import Budget, JobSpec, TeamLimits
from speedq.store import Store
from speedq.teams import add_team as add_team_in
from speedq.teams import set_team
from tests.conftest import RedisServer, Speedq, wait_for
from tests.teams_helpers import add_team
from tests.test_cli_validation import snapshot

SMOKE = ("--backend", "sim", "--smoke", "--gpu", "CPU:1")


@pytest.fixture
def client(redis_server: RedisServer, speedq: Speedq, monkeypatch: pytest.MonkeyPatch) -> Client:
    """An in-process Client on the test's Redis and the CLI's state directory (the sim repo)."""
    monkeypatch.setenv("SPEEDQ_HOME", str(speedq.home))
    monkeypatch.setenv("SPEEDQ_REDIS_URL", redis_server.url)
    return Client(redis_server.client())


def preview_json(speedq: Speedq, *args: str) -> dict:
    done = speedq.run("submit", "--dry-run", "--json", *args, check=True)
    return json.loads(done.stdout)


def smoke_spec(team: str) -> dict[str, str]:
    return {"team": team, "backend": "sim", "mode": "smoke", "gpu": "CPU:1"}


def smoke_estimate_s(client: Client, team: str) -> int:
    return client.preview(smoke_spec(team)).estimate.gpu_seconds


def budget_of(client: Client, team: str) -> Budget:
    return client.preview(smoke_spec(team)).budget


def test_dry_run_stores_nothing_through_cli_api_and_client(speedq: Speedq, redis_server, client: Client) -> None:
    token = add_team(speedq, "alpha", "--gpu-hours-budget", "100")
    speedq.submit("--team", "alpha", "--run-name", "earlier")  # something stored to leave alone
    conn = redis_server.client()
    before = snapshot(conn)

    shown = preview_json(speedq, "--team", "alpha", *SMOKE)
    table = speedq.run("submit", "--dry-run", "--team", "alpha", *SMOKE, check=True).stdout
    with TestClient(create_app(redis_server.client()), raise_server_exceptions=False) as api:
        answer = api.post("/v1/jobs/preview", json={"backend": "sim", "mode": "smoke", "gpu": "CPU:1"},
                          headers={"Authorization": f"Bearer {token}"})
        invalid = api.post("/v1/jobs/preview", json={"gpu": "TPUv9"}, headers={"Authorization": f"Bearer {token}"})
    through_client = client.preview(smoke_spec("alpha"))
    bad = speedq.run("submit", "--dry-run", "--team", "alpha", "--gpu", "H100:3")

    assert snapshot(conn) == before  # byte for byte: the job sequence, queues, counters
    assert answer.status_code == 200, answer.text
    assert answer.json() == shown == json.loads(through_client.model_dump_json())  # one code path
    assert invalid.status_code == 422
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "GPU count" in bad.stderr
    # what a worker pins: the sim resolves the known-good commit to its own branch's head
    assert shown["commit"] and len(shown["commit"]) == 40 and shown["commit_note"] is None
    assert shown["steps"] == nanochat.SMOKE_STEPS
    assert shown["budget"]["gpu_hours_budget"] == 100 and shown["refusal"] is None
    for words in ("nothing stored", shown["commit"], "10 (", "GPU-hours", "from table", "left", "would be queued"):
        assert words in table, (words, table)


def test_the_commit_a_dry_run_shows_is_the_one_the_worker_pins(speedq: Speedq) -> None:
    shown = preview_json(speedq, "--team", "alpha", *SMOKE)
    job = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1")
    speedq.start_worker("--burst")
    record = speedq.wait_state(job, "succeeded", "failed", timeout=90)
    assert record["nanochat_commit"] == shown["commit"]


def test_offline_or_unreachable_resolution_says_so_in_one_line(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_OFFLINE"] = "1"
    shown = preview_json(speedq, "--team", "alpha", "--backend", "modal", "--repo-ref", "master")
    assert shown["commit"] is None and "SPEEDQ_OFFLINE" in shown["commit_note"]
    pinned = preview_json(speedq, "--team", "alpha", "--backend", "modal")  # a commit needs no network
    assert pinned["commit"] == nanochat.KNOWN_GOOD_COMMIT


def test_estimate_from_the_stated_table_without_history(speedq: Speedq, client: Client) -> None:
    shown = preview_json(speedq, "--team", "alpha", "--model", "d24", "--gpu", "H100:8", "--backend", "modal")
    est = shown["estimate"]

    # The README's formula, from the numbers config.py states.
    tokens = shown["tokens"]
    assert tokens == shown["steps"] * nanochat.size_run(24, "full", "H100", 8).total_batch_size
    flops = tokens * nanochat.flops_per_token(24)
    peak = config.ESTIMATE_PEAK_FLOPS["H100"]
    seconds = flops / (peak * config.ESTIMATE_MFU) + config.ESTIMATE_OVERHEAD_S["full"] * 8
    assert est["source"] == "table" and est["runs"] == []
    assert est["gpu_seconds"] == math.ceil(seconds)
    assert est["cost_usd"] == round(est["gpu_seconds"] / 3600 * config.DEFAULT_GPU_PRICES["H100"], 2)
    assert "MFU" in est["basis"] and "989" in est["basis"]
    smaller = preview_json(speedq, "--team", "alpha", "--model", "d12", "--gpu", "H100:8", "--backend", "modal")
    assert smaller["estimate"]["gpu_seconds"] < est["gpu_seconds"]


def test_estimate_from_history_once_runs_succeed(speedq: Speedq, client: Client) -> None:
    assert preview_json(speedq, "--team", "alpha", *SMOKE)["estimate"]["source"] == "table"
    jobs = [speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", f"r{i}") for i in range(3)]
    speedq.start_worker("--burst")
    done = [speedq.wait_state(j, "succeeded", "failed", timeout=120) for j in jobs]
    assert all(r["state"] == "succeeded" for r in done), [r["error"] for r in done]

    shown = preview_json(speedq, "--team", "alpha", *SMOKE)
    est = shown["estimate"]
    assert est["source"] == "history" and sorted(est["runs"]) == sorted(jobs)
    spent = sorted(r["gpu_seconds"] for r in done)  # same tokens each: the median run's GPU-seconds
    assert abs(est["gpu_seconds"] - math.ceil(spent[1])) <= 1  # median rate x the same tokens, rounded up
    assert "median of 3 past d12 smoke runs on CPU" in est["basis"]
    # Another team, mode or GPU type has no history of its own.
    assert preview_json(speedq, "--team", "beta", *SMOKE)["estimate"]["source"] == "table"
    full = preview_json(speedq, "--team", "alpha", "--backend", "sim", "--gpu", "CPU:1")
    assert full["estimate"]["source"] == "table"
    # Nor another backend: the sim's seconds are simulated (offline: the local ref is left unresolved)
    speedq.env["SPEEDQ_OFFLINE"] = "1"
    local = preview_json(speedq, "--team", "alpha", "--backend", "local", "--smoke", "--gpu", "CPU:1")
    assert local["estimate"]["source"] == "table"


def test_a_submit_over_the_budget_is_refused_exit_3_or_402_and_stores_nothing(
    speedq: Speedq, redis_server, client: Client
) -> None:
    need_s = smoke_estimate_s(client, "alpha")
    token = add_team(speedq, "alpha", "--gpu-hours-budget", repr(1.5 * need_s / 3600))  # room for one run
    first = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "one")
    conn = redis_server.client()
    before = snapshot(conn)

    refused = speedq.run("submit", "--team", "alpha", *SMOKE, "--run-name", "two")
    with TestClient(create_app(redis_server.client()), raise_server_exceptions=False) as api:
        answer = api.post("/v1/jobs", json={"backend": "sim", "mode": "smoke", "gpu": "CPU:1", "run_name": "two"},
                          headers={"Authorization": f"Bearer {token}"})
        documented = api.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    dry = speedq.run("submit", "--dry-run", "--team", "alpha", *SMOKE, "--run-name", "two")

    assert refused.returncode == 3 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "budget" in refused.stderr and "reserved" in refused.stderr
    assert answer.status_code == BudgetExceeded.http_status == 402 and "budget" in answer.json()["detail"]
    assert "402" in documented
    # the dry run shows why, then exits 3 with the same line
    assert dry.returncode == 3 and "refused" in dry.stdout and "budget" in dry.stderr
    assert snapshot(conn) == before

    # The first run's reservation goes when it is cancelled: then the second fits.
    speedq.run("cancel", first, "--team", "alpha", check=True)
    assert budget_of(client, "alpha").reserved_gpu_hours == 0
    speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "two")


def test_what_fits_is_never_refused(speedq: Speedq, client: Client) -> None:
    need_s = smoke_estimate_s(client, "alpha")
    add_team(speedq, "alpha", "--gpu-hours-budget", repr(3 * need_s / 3600))  # exactly three runs
    jobs = [speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", f"r{i}") for i in range(3)]
    assert len(set(jobs)) == 3
    budget = budget_of(client, "alpha")
    assert budget.reserved_gpu_hours == pytest.approx(3 * need_s / 3600, abs=1e-4)
    assert budget.left_gpu_hours == pytest.approx(0, abs=1e-4)


def test_racing_submits_never_reserve_past_the_budget(redis_server: RedisServer, client: Client) -> None:
    conn = redis_server.client()
    need_s = smoke_estimate_s(client, "alpha")
    add_team_in(Store(conn), "alpha", TeamLimits(gpu_hours_budget=4 * need_s / 3600))  # four runs fit
    outcomes: list[str] = []

    def submit(i: int) -> None:
        own = Client(redis.Redis.from_url(redis_server.url))
        try:
            own.submit(JobSpec(team="alpha", backend="sim", mode="smoke", gpu="CPU:1", run_name=f"r{i}"))
            outcomes.append("queued")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["queued"] * 4 + ["refused"] * 8
    assert int(conn.get(Keys.team("alpha", "reserved"))) == 4 * need_s


@pytest.mark.parametrize("end", ["succeeded", "failed", "cancelled"])
def test_the_reservation_is_released_when_the_job_ends(end: str, speedq: Speedq, client: Client) -> None:
    need_s = smoke_estimate_s(client, "alpha")
    add_team(speedq, "alpha", "--gpu-hours-budget", "1000")
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.5" if end == "cancelled" else "0.05"  # long enough to cancel mid-run
    job = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--max-attempts", "1")

    assert budget_of(client, "alpha").reserved_gpu_hours == pytest.approx(need_s / 3600, abs=1e-4)
    speedq.start_worker(env={"SPEEDQ_SIM_FAULTS": "crash@3"} if end == "failed" else {})
    if end == "cancelled":
        speedq.wait_state(job, "running", timeout=60)
        speedq.run("cancel", job, "--team", "alpha", check=True)
    record = speedq.wait_state(job, "succeeded", "failed", "cancelled", timeout=90)

    assert record["state"] == end, record["error"]
    assert record["estimate"]["gpu_seconds"] == need_s
    after = budget_of(client, "alpha")
    assert after.reserved_gpu_hours == 0
    assert after.spent_gpu_hours == pytest.approx(record["gpu_seconds"] / 3600, abs=1e-4)


def test_a_budget_lowered_after_the_submit_stops_the_run_before_it_starts(
    speedq: Speedq, redis_server, client: Client
) -> None:
    need_s = smoke_estimate_s(client, "alpha")
    add_team(speedq, "alpha", "--gpu-hours-budget", repr(2 * need_s / 3600))
    first = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "one")
    second = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "two")
    set_team(Store(redis_server.client()), "alpha", TeamLimits(gpu_hours_budget=1.5 * need_s / 3600), False)

    speedq.start_worker("--burst")
    records = {j: speedq.wait_state(j, "succeeded", "failed", timeout=120) for j in (first, second)}

    # One of the two no longer fits: it fails without an attempt; the other runs.
    states = sorted(r["state"] for r in records.values())
    assert states == ["failed", "succeeded"], {j: r["error"] for j, r in records.items()}
    stopped = next(r for r in records.values() if r["state"] == "failed")
    assert stopped["attempts"] == [] and "budget" in stopped["error"] and "not started" in stopped["error"]
    wait_for(lambda: budget_of(client, "alpha").reserved_gpu_hours == 0, timeout=10, what="every reservation released")


def test_a_dry_run_of_anything_writes_nothing(
    redis_server: RedisServer, tmp_path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """Fed anything (the CLI fuzz's inputs), a dry run exits 0, 2 or 3 and Redis stays byte for
    byte as it was, whether it would have been queued or refused."""
    from hypothesis import given

    from tests.test_entry_properties import SETTINGS, SUBMIT, options, run_cli

    conn = redis_server.client()
    conn.flushall()
    monkeypatch.setenv("SPEEDQ_REDIS_URL", redis_server.url)
    monkeypatch.setenv("SPEEDQ_HOME", str(tmp_path))
    monkeypatch.setenv("SPEEDQ_OFFLINE", "1")  # a ref to resolve on GitHub is reported, not fetched
    add_team_in(Store(conn), "alpha", TeamLimits(max_queued=1, gpu_hours_budget=100))
    Client(conn).submit(JobSpec(team="alpha", backend="sim", run_name="held"))
    before = snapshot(conn)
    codes: set[int] = set()

    @SETTINGS
    @given(argv=options(SUBMIT, ["--smoke", "--force-restart", "--json"]))
    def check(argv: list[str]) -> None:
        code, _, err = run_cli(["submit", "--dry-run", "--team", "alpha", *argv])
        codes.add(code)
        assert code in (0, 2, 3), (argv, code, err)
        assert snapshot(conn) == before, argv

    check()
    assert {2, 3} <= codes  # both refusals met (alpha's one queued place is taken: a valid new run is 3)


def test_a_dry_run_for_a_run_with_an_active_job_says_the_submit_returns_it(speedq: Speedq) -> None:
    add_team(speedq, "alpha", "--max-queued", "1")
    held = speedq.submit("--team", "alpha", *SMOKE[2:])
    shown = preview_json(speedq, "--team", "alpha", *SMOKE)
    assert shown["active_job"] == held and shown["refusal"] is None  # the submit returns it, over no quota
    assert speedq.submit("--team", "alpha", *SMOKE[2:]) == held


def test_a_retry_reserves_its_estimate_again_and_is_refused_when_it_does_not_fit(
    speedq: Speedq, redis_server, client: Client
) -> None:
    need_s = smoke_estimate_s(client, "alpha")
    add_team(speedq, "alpha", "--gpu-hours-budget", repr(1.5 * need_s / 3600))
    job = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "one")
    speedq.run("cancel", job, "--team", "alpha", check=True)
    other = speedq.submit("--team", "alpha", "--smoke", "--gpu", "CPU:1", "--run-name", "two")
    conn = redis_server.client()
    before = snapshot(conn)

    refused = speedq.run("retry", job, "--team", "alpha")

    assert refused.returncode == 3 and "budget" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(conn) == before
    speedq.run("cancel", other, "--team", "alpha", check=True)
    speedq.run("retry", job, "--team", "alpha", check=True)
    assert budget_of(client, "alpha").reserved_gpu_hours == pytest.approx(need_s / 3600, abs=1e-4)


def test_the_job_page_shows_its_team_the_estimate_its_submit_reserved(speedq: Speedq) -> None:
    from tests.api_server import start_api
    from tests.browser import LivePage

    token = add_team(speedq, "alpha")
    job = speedq.submit("--team", "alpha", "--model", "d24", "--gpu", "H100:8")  # queued: no worker serves it
    estimate = speedq.status(job)["estimate"]
    base_url = start_api(speedq)

    with LivePage(f"{base_url}/#/jobs/{job}") as page:
        page.wait("!!document.getElementById('facts')", what="the job page")
        assert not page.evaluate("!!document.getElementById('estimate')")  # the team's own view only
        page.evaluate(f"document.getElementById('token').value = {json.dumps(token)}")
        page.click("#token-form button")
        shown = page.wait("document.getElementById('estimate')?.textContent", what="the estimate")
        page.screenshot("job-estimate.png")

    assert f"{estimate['gpu_hours']:.3f} GPU-hours" in str(shown)
    assert f"${estimate['cost_usd']:.2f}" in str(shown) and "from table" in str(shown)


def test_a_job_stored_with_an_estimate_redis_could_not_reserve_holds_nothing() -> None:
    """Before MAX_JOB_GPU_SECONDS a submit could store an estimate of 2^63 GPU-seconds or more, and
    Redis refused its reservation; releasing it now would be refused too, and the job stuck."""
    from speedq.estimate import reservation_s
    from speedq.schemas import Estimate, JobRecord

    spec = JobSpec(team="alpha", backend="sim")
    huge = Estimate(gpu_seconds=2**63, cost_usd=0.0, source="history", basis="old")
    assert reservation_s(JobRecord(id="sq-1", spec=spec, estimate=huge)) == 0
    fine = Estimate(gpu_seconds=2**62, cost_usd=0.0, source="history", basis="new")
    assert reservation_s(JobRecord(id="sq-1", spec=spec, estimate=fine)) == 2**62
