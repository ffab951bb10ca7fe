"""Teams from an operator's seat: adding them, their tokens, and each quota refusing or holding
work the way the issue says."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import Speedq, wait_for
from tests.teams_helpers import add_team, lasting_snapshot, records
from tests.test_cli_validation import snapshot


def test_team_add_shows_the_token_once_and_stores_only_its_hash(speedq: Speedq, redis_server) -> None:
    token = add_team(speedq, "vision", "--max-queued", "5", "--max-running", "2", "--gpu-hours-budget", "100")

    client = redis_server.client()
    dump = b"".join(v for v in snapshot(client).values())
    assert len(token) >= 40 and token.encode() not in dump
    assert hashlib.sha256(token.encode()).hexdigest().encode() in dump
    listed = json.loads(speedq.run("team", "ls", "--json", check=True).stdout)
    assert listed == [listed[0]] and listed[0]["name"] == "vision"
    assert (listed[0]["max_queued"], listed[0]["max_running"], listed[0]["gpu_hours_budget"]) == (5, 2, 100)
    assert "token" not in json.dumps(listed)
    table = speedq.run("team", "ls", check=True).stdout
    assert "vision" in table and token not in table

    again = speedq.run("team", "add", "vision")
    assert again.returncode == 2 and "already added" in again.stderr


def test_team_set_changes_limits_and_rotates_the_token(speedq: Speedq) -> None:
    first = add_team(speedq, "vision", "--max-queued", "5")

    done = speedq.run("team", "set", "vision", "--max-queued", "none", "--max-running", "3", "--rotate-token",
                      check=True)
    second = done.stdout.strip().splitlines()[-1]

    assert second != first and len(second) >= 40
    shown = json.loads(speedq.run("team", "ls", "--json", check=True).stdout)[0]
    assert (shown["max_queued"], shown["max_running"]) == (None, 3)
    unknown = speedq.run("team", "set", "nobody", "--max-queued", "1")
    assert unknown.returncode == 2 and "has not been added" in unknown.stderr


def test_bad_team_input_is_one_line_exit_2(speedq: Speedq, redis_server) -> None:
    add_team(speedq, "vision")
    before = snapshot(redis_server.client())
    for args, field in [
        (["team", "add", "Bad Name"], "team"),
        (["team", "add", "ok", "--max-queued", "-1"], "max-queued"),
        (["team", "add", "ok", "--max-running", "0"], "max-running"),
        (["team", "add", "ok", "--gpu-hours-budget", "lots"], "gpu-hours-budget"),
        (["team", "set", "vision", "--max-running", "1.5"], "max-running"),
        (["stats", "--team", "NO"], "team"),
    ]:
        done = speedq.run(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and field in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert snapshot(redis_server.client()) == before


def test_over_max_queued_refuses_with_exit_3_and_stores_nothing(speedq: Speedq, redis_server) -> None:
    add_team(speedq, "small", "--max-queued", "2")
    speedq.submit("--team", "small", "--run-name", "r1")
    speedq.submit("--team", "small", "--run-name", "r2")
    speedq.submit("--team", "other", "--run-name", "r3")  # another team's queue is not small's
    before = snapshot(redis_server.client())

    refused = speedq.run("submit", "--backend", "sim", "--team", "small", "--run-name", "r4")

    assert refused.returncode == 3
    assert refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "max" in refused.stderr and "small" in refused.stderr
    assert snapshot(redis_server.client()) == before
    # A place frees up when one is cancelled.
    speedq.run("cancel", records(speedq, "--team", "small")[0]["id"], "--team", "small", check=True)
    speedq.submit("--team", "small", "--run-name", "r4")


def test_over_the_gpu_hour_budget_refuses_submit_and_retry(speedq: Speedq, redis_server) -> None:
    add_team(speedq, "thrifty")
    job = speedq.submit("--team", "thrifty", "--smoke", "--gpu", "H100:8")
    worker = speedq.start_worker("--burst")
    wait_for(lambda: worker.poll() is not None, timeout=180, what="the burst worker to finish")  # 8 sim ranks
    assert speedq.status(job)["state"] == "succeeded"
    # Set after the run: a submit reserves its estimate, which this budget would not have held.
    speedq.run("team", "set", "thrifty", "--gpu-hours-budget", "0.0001", check=True)  # under a second of one GPU
    before = lasting_snapshot(redis_server.client())

    refused = speedq.run("submit", "--backend", "sim", "--team", "thrifty", "--run-name", "more")

    assert refused.returncode == 3 and "GPU-hour budget" in refused.stderr, refused.stderr
    assert lasting_snapshot(redis_server.client()) == before
    speedq.run("team", "set", "thrifty", "--gpu-hours-budget", "none", check=True)
    speedq.submit("--team", "thrifty", "--run-name", "more")


def test_unknown_teams_run_open_unless_the_operator_locks_the_queue(speedq: Speedq, redis_server) -> None:
    speedq.submit("--team", "walk-in")
    listed = json.loads(speedq.run("team", "ls", "--json", check=True).stdout)
    assert [(t["name"], t["added"]) for t in listed] == [("walk-in", False)]

    speedq.env["SPEEDQ_OPEN_TEAMS"] = "0"
    before = snapshot(redis_server.client())
    refused = speedq.run("submit", "--backend", "sim", "--team", "stranger")
    assert refused.returncode == 3 and "team add stranger" in refused.stderr
    assert snapshot(redis_server.client()) == before
    add_team(speedq, "stranger")
    speedq.submit("--team", "stranger")


def test_max_running_holds_the_team_back_while_another_team_runs(speedq: Speedq, redis_server) -> None:
    add_team(speedq, "capped", "--max-running", "1")
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.1"  # each run lasts a second or two: they would overlap
    # All three queued before any worker starts: under load a submit after the start could come
    # only once the capped team's first run had ended, and then prove nothing.
    first = speedq.submit("--team", "capped", "--smoke", "--run-name", "c1")
    second = speedq.submit("--team", "capped", "--smoke", "--run-name", "c2")
    other = speedq.submit("--team", "other", "--smoke", "--run-name", "o1")
    speedq.start_worker()
    speedq.start_worker()

    done = {j: speedq.wait_state(j, "succeeded", "failed", timeout=90) for j in (first, second, other)}

    assert all(r["state"] == "succeeded" for r in done.values()), {j: r["error"] for j, r in done.items()}
    spans = {j: (r["attempts"][0]["started_at"], r["attempts"][-1]["ended_at"]) for j, r in done.items()}
    earlier, later = sorted((first, second), key=lambda j: spans[j][0])
    assert spans[later][0] >= spans[earlier][1]  # capped's two runs never overlapped
    assert spans[other][0] < spans[later][0]  # the second worker ran the other team's job meanwhile
    # Every slot comes back: the work horse frees it after the write that ends the job
    wait_for(lambda: redis_server.client().scard("speedq:team:capped:running") == 0, what="capped's slot back")
