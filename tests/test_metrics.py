"""Prometheus metrics: a real scrape of `speedq api`'s /metrics after a real worker ran two
teams' jobs; every figure equals what the records say."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from tests.teams_helpers import records
from tests.two_teams import WORKER, Scene, scene  # noqa: F401 - the fixture


def scrape(base_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> sorted label pairs -> value."""
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_equal_the_records(scene: Scene) -> None:  # noqa: F811
    metrics = scrape(scene.base_url)
    jobs = records(scene.speedq)

    queued = Counter((r["spec"]["team"], r["spec"]["priority"]) for r in jobs if r["state"] == "queued")
    assert queued == {("beta", "high"): 1, ("beta", "low"): 1}
    assert metrics["speedq_queue_depth"] == {
        (("priority", p), ("team", t)): float(queued[(t, p)])
        for t in ("alpha", "beta")
        for p in ("high", "normal", "low")
    }

    by_state = Counter((r["state"], r["spec"]["team"]) for r in jobs)
    states = ("queued", "starting", "running", "retrying", "succeeded", "failed", "cancelled")
    assert metrics["speedq_jobs"] == {
        (("state", s), ("team", t)): float(by_state[(s, t)]) for s in states for t in ("alpha", "beta")
    }

    outcomes = Counter((a["outcome"], r["spec"]["team"]) for r in jobs for a in r["attempts"])
    assert outcomes == {("preempted", "alpha"): 1, ("succeeded", "alpha"): 1, ("succeeded", "beta"): 1}
    assert metrics["speedq_attempts_total"] == {
        (("outcome", o), ("team", t)): float(n) for (o, t), n in outcomes.items()
    }

    for team in ("alpha", "beta"):
        seconds = sum(
            (a["ended_at"] - a["started_at"]) * a["gpu_count"]
            for r in jobs
            if r["spec"]["team"] == team
            for a in r["attempts"]
        )
        assert metrics["speedq_gpu_hours_total"][(("team", team),)] == pytest.approx(seconds / 3600, rel=1e-9)

    # The one worker running: its last heartbeat as a Unix time, between its birth and now.
    workers = Worker.all(connection=redis.Redis.from_url(scene.speedq.env["SPEEDQ_REDIS_URL"]))
    assert [w.name for w in workers] == [WORKER]
    beats = metrics["speedq_worker_last_heartbeat_seconds"]
    assert list(beats) == [(("worker", WORKER),)]
    assert workers[0].birth_date.timestamp() <= beats[(("worker", WORKER),)] <= time.time()

def test_metrics_need_no_token_and_stay_out_of_the_api_schema(scene: Scene) -> None:  # noqa: F811
    assert httpx.get(f"{scene.base_url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 200
    assert "/metrics" not in httpx.get(f"{scene.base_url}/openapi.json").json()["paths"]
