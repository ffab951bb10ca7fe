"""The HTTP API: tokens on every endpoint, other teams' jobs, the same validation as the CLI,
and a job from submit to logs through a real `speedq api` and a real worker."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from speedq.api import create_app
from tests.api_server import start_api
from tests.conftest import Speedq, wait_for
from tests.teams_helpers import add_team
from tests.test_cli_validation import snapshot


@pytest.fixture
def api(speedq: Speedq, redis_server) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The app in-process on the test's Redis, and tokens for teams alpha and beta."""
    tokens = {team: add_team(speedq, team) for team in ("alpha", "beta")}
    with TestClient(create_app(redis_server.client()), raise_server_exceptions=False) as client:
        yield client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_endpoint_wants_a_valid_token(api, redis_server) -> None:
    client, tokens = api
    job = client.post("/v1/jobs", json={"backend": "sim"}, headers=bearer(tokens["alpha"])).json()["job"]["id"]
    before = snapshot(redis_server.client())
    endpoints = [
        ("post", "/v1/jobs", {"backend": "sim", "run_name": "x"}),
        ("get", f"/v1/jobs/{job}", None),
        ("get", "/v1/jobs", None),
        ("get", f"/v1/jobs/{job}/logs", None),
        ("post", f"/v1/jobs/{job}/cancel", None),
        ("post", f"/v1/jobs/{job}/retry", None),
        ("get", "/v1/stats", None),
    ]
    for method, path, body in endpoints:
        for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic YTpi"}, bearer("")):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    assert snapshot(redis_server.client()) == before


def test_another_teams_job_is_403_for_writes_and_status_only_for_reads(api, redis_server) -> None:
    client, tokens = api
    alpha, beta = bearer(tokens["alpha"]), bearer(tokens["beta"])
    job = client.post("/v1/jobs", json={"backend": "sim"}, headers=alpha).json()["job"]["id"]
    before = snapshot(redis_server.client())

    for path in (f"/v1/jobs/{job}/cancel", f"/v1/jobs/{job}/retry"):
        denied = client.post(path, headers=beta)
        assert denied.status_code == 403 and "alpha" in denied.json()["detail"]
    assert client.get(f"/v1/jobs/{job}/logs", headers=beta).status_code == 403
    wrong_team = client.post("/v1/jobs", json={"backend": "sim", "team": "alpha"}, headers=beta)
    assert wrong_team.status_code == 403
    assert snapshot(redis_server.client()) == before

    seen = client.get(f"/v1/jobs/{job}", headers=beta).json()
    assert seen["state"] == "queued" and seen["team"] == "alpha" and "spec" not in seen and "attempts" not in seen
    listed = client.get("/v1/jobs", headers=beta).json()
    assert [("spec" in r) for r in listed] == [False]
    own = client.get(f"/v1/jobs/{job}", headers=alpha).json()
    assert own["spec"]["team"] == "alpha"
    assert client.post(f"/v1/jobs/{job}/cancel", headers=alpha).json()["state"] == "cancelled"
    assert client.post(f"/v1/jobs/{job}/cancel", headers=alpha).status_code == 409
    assert client.post(f"/v1/jobs/{job}/retry", headers=alpha).json()["state"] == "queued"


def test_api_validation_is_the_cli_line_and_quotas_are_429(api, speedq: Speedq, redis_server) -> None:
    client, tokens = api
    alpha = bearer(tokens["alpha"])
    cli = speedq.run("submit", "--team", "alpha", "--gpu", "V100")
    before = snapshot(redis_server.client())

    bad = client.post("/v1/jobs", json={"gpu": "V100"}, headers=alpha)

    assert bad.status_code == 422
    assert cli.stderr.strip() == f"error: {bad.json()['detail']}"
    assert client.get("/v1/jobs/sq-1;rm", headers=alpha).status_code == 422
    assert client.get("/v1/jobs?state=exploded", headers=alpha).status_code == 422
    assert client.get("/v1/jobs/sq-999", headers=alpha).status_code == 404
    assert snapshot(redis_server.client()) == before

    speedq.run("team", "set", "alpha", "--max-queued", "1", check=True)
    assert client.post("/v1/jobs", json={"backend": "sim", "run_name": "one"}, headers=alpha).status_code == 201
    again = client.post("/v1/jobs", json={"backend": "sim", "run_name": "one"}, headers=alpha)
    assert again.status_code == 201 and again.json()["created"] is False  # the same run: that job
    over = client.post("/v1/jobs", json={"backend": "sim", "run_name": "two"}, headers=alpha)
    assert over.status_code == 429 and "max-queued" in over.json()["detail"]


def test_a_rotated_token_stops_working(api, speedq: Speedq) -> None:
    client, tokens = api
    new = speedq.run("team", "set", "alpha", "--rotate-token", check=True).stdout.strip().splitlines()[-1]
    assert client.get("/v1/jobs", headers=bearer(tokens["alpha"])).status_code == 401
    assert client.get("/v1/jobs", headers=bearer(new)).status_code == 200


def test_redis_down_is_503_not_500(speedq: Speedq, own_redis) -> None:
    app = create_app(own_redis.client())
    with TestClient(app, raise_server_exceptions=False) as client:
        own_redis.kill()
        response = client.get("/v1/jobs", headers=bearer("anything"))
    assert response.status_code == 503 and "Redis" in response.json()["detail"]


def test_speedq_api_serves_a_job_from_submit_to_logs(speedq: Speedq) -> None:
    token = add_team(speedq, "alpha")
    base_url = start_api(speedq)
    speedq.start_worker()
    http = httpx.Client(base_url=base_url, headers=bearer(token))

    submitted = http.post("/v1/jobs", json={"backend": "sim", "mode": "smoke"})
    assert submitted.status_code == 201
    job = submitted.json()["job"]["id"]
    wait_for(lambda: http.get(f"/v1/jobs/{job}").json()["state"] == "succeeded", timeout=60, what="the job")

    assert "step 00009/00010" in http.get(f"/v1/jobs/{job}/logs", params={"tail": 50}).text
    stats = http.get("/v1/stats", params={"team": "alpha"}).json()
    assert stats[0]["jobs"]["succeeded"] == 1 and stats[0]["gpu_hours"] > 0
    assert "/v1/jobs/{job_id}/retry" in http.get("/openapi.json").json()["paths"]


def test_a_fork_through_the_api_is_checked_as_through_the_cli(api, redis_server, speedq: Speedq) -> None:
    client, tokens = api
    alpha, beta = bearer(tokens["alpha"]), bearer(tokens["beta"])
    before = snapshot(redis_server.client())
    for repo, rule in (("https://x:secret@github.com/alice/nanochat", "credentials"),
                       ("ssh://github.com/alice/nanochat", "https://"),
                       ("https://gitlab.com/alice/nanochat", "SPEEDQ_REPO_HOSTS")):
        refused = client.post("/v1/jobs", json={"backend": "sim", "repo": repo}, headers=alpha)
        assert refused.status_code == 422 and rule in refused.json()["detail"], refused.text
        previewed = client.post("/v1/jobs/preview", json={"backend": "sim", "repo": repo}, headers=alpha)
        assert (previewed.status_code, previewed.json()) == (422, refused.json())
        cli = speedq.run("submit", "--team", "alpha", "--backend", "sim", "--repo", repo)
        assert cli.returncode == 2 and cli.stderr.strip() == f"error: {refused.json()['detail']}"
    assert snapshot(redis_server.client()) == before

    done = client.post("/v1/jobs", json={"backend": "sim", "repo": "https://github.com/alice/nanochat.git",
                                         "repo_ref": "fast"}, headers=alpha)
    assert done.status_code == 201, done.text
    job = done.json()["job"]
    assert job["spec"]["repo"] == "https://github.com/alice/nanochat.git"
    assert job["spec"]["run_name"] == "alice-nanochat-d12"
    seen = client.get(f"/v1/jobs/{job['id']}", headers=beta).json()  # another team's: status only, with its source
    assert "spec" not in seen and seen["source"] == "alice/nanochat@fast" and seen["repo_ref"] == "fast"
