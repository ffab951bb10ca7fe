"""`speedq leaderboard` and `speedq compare` as a user runs them, and the API's equivalents,
on runs stored as the worker stores them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from speedq.api import create_app
from speedq.store import Store
from tests.board_scene import seed
from tests.conftest import RedisServer, Speedq
from tests.teams_helpers import add_team
from tests.test_cli_validation import snapshot


@pytest.fixture
def runs(speedq: Speedq, redis_server: RedisServer) -> dict[str, str]:
    return seed(Store(redis_server.client()))


def table_rows(output: str, first_column: str) -> list[list[str]]:
    """A rich table's body rows as cells (the box-drawing bars split them)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) > 2 and cells[0] != first_column and cells[0]:
            rows.append(cells)
    return rows


def test_leaderboard_prints_time_to_gpt2_fastest_first_and_the_best_bpb_per_depth(
    speedq: Speedq, runs: dict[str, str], redis_server: RedisServer
) -> None:
    done = speedq.run("leaderboard", check=True)
    out = done.stdout
    time_table, bpb_table = out.split("best val bpb per depth")
    assert "time to GPT-2: CORE above 0.256525 on 8xH100, fastest first" in time_table
    rows = table_rows(time_table, "#")
    commit = Store(redis_server.client()).get(runs["fast"]).nanochat_commit
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [r[-1] for r in rows] == [runs["fast"], runs["deep"], runs["slow"]]  # the job id, for `status`
    assert rows[0][1:8] == ["2h43m20s", "alpha", "d24", f"karpathy/nanochat@{commit[:7]}", "fp8 matrix-lr=0.025",
                            "0.2601", "0.7421"]
    assert rows[0][8] == "$86.02"  # 9,800 s on 8 GPUs at $3.95 per GPU-hour
    assert [(r[0], r[1], r[-1]) for r in table_rows(bpb_table, "MODEL")] == [
        ("d12", "0.8800", runs["small"]), ("d24", "0.7350", runs["half"]), ("d26", "0.7302", runs["deep"]),
    ]

    beta = json.loads(speedq.run("leaderboard", "--team", "beta", "--model", "d24", "--json", check=True).stdout)
    assert (beta["team"], beta["model"], beta["gpt2_core"]) == ("beta", "d24", 0.256525)
    assert [r["job"] for r in beta["time_to_gpt2"]] == [runs["slow"]]
    assert [r["job"] for r in beta["best_bpb"]] == [runs["slow"]]
    assert beta["time_to_gpt2"][0]["results"]["beats_gpt2"] is True


def test_an_empty_board_says_so(speedq: Speedq) -> None:
    out = speedq.run("leaderboard", check=True).stdout
    assert "no run has beaten GPT-2's CORE yet" in out and "no full run with a val bpb yet" in out


def test_compare_prints_metrics_as_rows_and_jobs_as_columns(speedq: Speedq, runs: dict[str, str]) -> None:
    out = speedq.run("compare", runs["fast"], runs["deep"], runs["live"], check=True).stdout
    header = next(line for line in out.splitlines() if runs["fast"] in line)
    assert header.index(runs["fast"]) < header.index(runs["deep"]) < header.index(runs["live"])
    rows = {r[0]: r[1:] for r in table_rows(out, "")}
    assert rows["team"] == ["alpha", "beta", "beta"]
    assert rows["state"] == ["succeeded", "succeeded", "running"]
    assert rows["training time"] == ["2h43m20s", "2h51m40s", "-"]
    assert rows["CORE"] == ["0.2601", "0.2630", "-"]
    assert rows["min val bpb"] == ["0.7421", "0.7302", "-"]
    assert rows["steps"][0] == "5,000" and rows["tokens"][0] == "5.24B" and rows["MFU"][0] == "48.50%"
    assert rows["tok/s"][0] == "535.00k" and rows["GPU-hours"][0] == "21.778" and rows["cost"][0] == "$86.02"
    assert rows["options"] == ["fp8 matrix-lr=0.025", "window-pattern=SSL", "-"]
    assert all(cell.startswith("karpathy/nanochat@") for cell in rows["repo@commit"])

    doc = json.loads(speedq.run("compare", runs["deep"], runs["fast"], "--json", check=True).stdout)
    assert [r["job"] for r in doc["runs"]] == [runs["deep"], runs["fast"]]
    assert doc["runs"][0]["results"]["core_metric"] == 0.2630


@pytest.mark.parametrize(("args", "line"), [
    (["leaderboard", "--model", "d1"], "invalid model 'd1': must be d<depth> with depth 2 to 64"),
    (["leaderboard", "--model", "gpt2"], "invalid model 'gpt2'"),
    (["leaderboard", "--team", "Beta"], "invalid team 'Beta'"),
    (["leaderboard", "--limit", "0"], "invalid limit"),
    (["compare", "sq-1", "job-2"], "invalid jobs 'job-2': job ids look like sq-42"),
    (["compare", "sq-1", "sq-999"], "no job sq-999"),
    (["compare"], "Missing argument"),
    (["compare", *(f"sq-{i}" for i in range(1, 14))], "invalid jobs"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    speedq: Speedq, runs: dict[str, str], redis_server: RedisServer, args: list[str], line: str
) -> None:
    before = snapshot(redis_server.client())
    done = speedq.run(*args)
    assert done.returncode == 2, done.stderr
    assert line in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert snapshot(redis_server.client()) == before


@pytest.fixture
def api(speedq: Speedq, redis_server: RedisServer, runs: dict[str, str]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = {team: add_team(speedq, team) for team in ("alpha", "beta")}
    with TestClient(create_app(redis_server.client()), raise_server_exceptions=False) as client:
        yield client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_serves_the_same_board_and_comparison(api, runs: dict[str, str], speedq: Speedq) -> None:  # type: ignore[no-untyped-def]
    client, tokens = api
    alpha = bearer(tokens["alpha"])
    cli = json.loads(speedq.run("leaderboard", "--model", "d24", "--json", check=True).stdout)
    assert client.get("/v1/leaderboard", params={"model": "d24"}, headers=alpha).json() == cli
    assert client.get("/dashboard/api/leaderboard", params={"model": "d24"}).json() == cli

    # Another team's run without results shows its status only; its own team sees its options.
    asked = {"jobs": [runs["fast"], runs["live"]]}
    seen_by_alpha = client.get("/v1/compare", params=asked, headers=alpha).json()["runs"]
    assert [r["job"] for r in seen_by_alpha] == [runs["fast"], runs["live"]]
    assert seen_by_alpha[0]["train_args"] == {"fp8": True, "matrix-lr": 0.025}
    assert seen_by_alpha[1]["train_args"] is None and seen_by_alpha[1]["state"] == "running"
    seen_by_beta = client.get("/v1/compare", params=asked, headers=bearer(tokens["beta"])).json()["runs"]
    assert seen_by_beta[1]["train_args"] == {} and seen_by_beta[1]["source"].startswith("karpathy/nanochat@")


def test_the_api_refuses_bad_queries_with_the_cli_line(api, runs: dict[str, str], redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    client, tokens = api
    alpha = bearer(tokens["alpha"])
    before = snapshot(redis_server.client())
    for path, params, status, line in [
        ("/v1/leaderboard", {"model": "d1"}, 422, "invalid model 'd1': must be d<depth> with depth 2 to 64"),
        ("/dashboard/api/leaderboard", {"model": "x"}, 422, "invalid model 'x'"),
        ("/v1/leaderboard", {"colour": "red"}, 422, "invalid colour"),
        ("/v1/compare", {"jobs": [runs["fast"], "sq-999"]}, 404, "no job sq-999"),
        ("/dashboard/api/compare", {"jobs": ["sq-999"]}, 404, "no job sq-999"),
        ("/v1/compare", {"jobs": ["nope"]}, 422, "invalid jobs 'nope': job ids look like sq-42"),
        ("/v1/compare", {}, 422, "invalid jobs"),
    ]:
        response = client.get(path, params=params, headers=alpha)
        assert (response.status_code, response.json()) == (status, {"detail": response.json()["detail"]})
        assert line in response.json()["detail"], (path, params, response.json())
    for path in ("/v1/leaderboard", "/v1/compare"):
        assert client.get(path, params={"jobs": runs["fast"]}).status_code == 401
    assert snapshot(redis_server.client()) == before
