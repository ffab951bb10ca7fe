"""`from speedq import Client`: the Python entry, against a real redis-server and real RQ workers
(processes running the sim backend, which speaks real nanochat's log)."""

from __future__ import annotations

import time

import pytest
import redis

from speedq import Client, InvalidInput, JobNotFound, JobSpec, JobState, NotYourJob
from tests.conftest import RedisServer, Speedq


@pytest.fixture
def client(speedq: Speedq, redis_server: RedisServer) -> Client:
    return Client(redis.Redis.from_url(redis_server.url))


def snapshot(conn: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: conn.dump(key) for key in sorted(conn.keys("*"))}


def test_submit_wait_logs_stats_from_python(speedq: Speedq, client: Client) -> None:
    speedq.start_worker()
    done = client.submit(JobSpec(team="alpha", mode="smoke", backend="sim"))
    assert done.created and done.job.state == JobState.queued

    record = client.wait(done.job.id, timeout=60, poll_s=0.2)

    assert record.state == JobState.succeeded, record.error
    assert record.progress is not None and record.progress.step == record.progress.total == 10
    assert "step 00009/00010" in client.logs(record.id)
    assert client.logs(record.id, tail=1).count("\n") <= 1
    assert [r.id for r in client.list(team="alpha")] == [record.id]
    assert client.get(record.id) == record
    (alpha,) = client.stats("alpha")
    assert alpha.team == "alpha" and alpha.jobs.get("succeeded") == 1


def test_submit_takes_a_mapping_and_dedupes_an_active_run(client: Client) -> None:
    first = client.submit({"team": "alpha", "run_name": "shared", "backend": "sim"})
    again = client.submit({"team": "alpha", "run_name": "shared", "backend": "sim"})
    assert first.created and not again.created
    assert again.job.id == first.job.id  # like arq's enqueue_job with a job id already queued


@pytest.mark.parametrize(
    "given",
    [
        {"team": "Not A Slug"},
        {"team": "alpha", "gpu": {"type": "H100", "count": -1000}},
        {"team": "alpha", "max_attempts": 10**40},
        {"team": "alpha", "repo_ref": "bad\udcffref"},
        {"team": "alpha", "surprise": 1},
    ],
)
def test_a_refused_submit_is_one_line_and_changes_nothing(client: Client, given: dict[str, object]) -> None:
    client.submit({"team": "seed", "backend": "sim"})  # a sequence counter exists to be left alone
    before = snapshot(client.conn)
    with pytest.raises(InvalidInput) as caught:
        client.submit(given)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2 and caught.value.http_status == 422
    assert snapshot(client.conn) == before


def test_cancel_retry_and_refusals(client: Client) -> None:
    job = client.submit({"team": "alpha", "backend": "sim"}).job
    with pytest.raises(NotYourJob):
        client.cancel(job.id, "beta")
    assert client.cancel(job.id, "alpha").state == JobState.cancelled
    assert client.retry(job.id, "alpha").state == JobState.queued
    with pytest.raises(JobNotFound) as missing:
        client.get("sq-999999")
    assert str(missing.value) == "no job sq-999999" and missing.value.exit_code == 2
    with pytest.raises(InvalidInput):
        client.get("not-an-id")
    with pytest.raises(InvalidInput):
        client.list(limit=0)


def test_wait_gives_up_at_its_timeout_with_the_record(client: Client) -> None:
    job = client.submit({"team": "alpha", "backend": "sim"}).job  # no worker: it stays queued
    started = time.monotonic()
    record = client.wait(job.id, timeout=0.6, poll_s=0.1)
    assert record.id == job.id and record.state == JobState.queued
    assert time.monotonic() - started >= 0.6


def test_cli_and_api_map_an_error_through_the_same_class(speedq: Speedq, redis_server: RedisServer) -> None:
    """One error tree: the CLI's exit code and the API's status for the same refusal both come
    from the error's class, and the one line is the same."""
    from fastapi.testclient import TestClient

    from speedq import errors
    from speedq.api import create_app
    from tests.teams_helpers import add_team

    token = add_team(speedq, "alpha")
    job = speedq.submit("--team", "alpha")
    cases = [
        (errors.JobNotFound, ["status", "sq-424242"], ("get", "/v1/jobs/sq-424242")),
        (errors.NotYourJob, ["cancel", job, "--team", "beta"], None),
        (errors.ProducerError, ["retry", job, "--team", "alpha"], ("post", f"/v1/jobs/{job}/retry")),
    ]
    with TestClient(create_app(redis_server.client()), raise_server_exceptions=False) as api:
        for kind, argv, request in cases:
            done = speedq.run(*argv)
            assert done.returncode == kind.exit_code, (argv, done.stderr)
            line = done.stderr.strip().removeprefix("error: ")
            if request is not None:
                method, path = request
                answer = api.request(method, path, headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == kind.http_status, answer.text
                assert answer.json()["detail"] == line
