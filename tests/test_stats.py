"""Accounting: stats are exact sums over the attempt records, priced from the table."""

from __future__ import annotations

import json

import pytest

from speedq import config
from tests.conftest import Speedq
from tests.teams_helpers import records


def test_stats_equal_the_sums_over_attempt_records(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_PRICES"] = json.dumps({"A10G": 2.0})
    jobs = [
        speedq.submit("--team", "alpha", "--smoke", "--gpu", "H100:8", "--run-name", "big"),
        speedq.submit("--team", "alpha", "--smoke", "--gpu", "A10G:2", "--run-name", "small"),
        speedq.submit("--team", "beta", "--smoke", "--gpu", "A10G", "--run-name", "one"),
    ]
    queued = speedq.submit("--team", "alpha", "--smoke", "--run-name", "later")
    speedq.run("cancel", queued, "--team", "alpha", check=True)  # cancelled before the worker starts
    speedq.start_worker("--burst")
    for job in jobs:
        speedq.wait_state(job, "succeeded", timeout=180)  # 8 sim ranks took over 60 s in a CI run

    figures = {s["team"]: s for s in json.loads(speedq.run("stats", "--json", check=True).stdout)}

    for team in ("alpha", "beta"):
        by_type: dict[str, float] = {}
        for record in records(speedq, "--team", team):
            for attempt in record["attempts"]:
                seconds = (attempt["ended_at"] - attempt["started_at"]) * attempt["gpu_count"]
                by_type[record["spec"]["gpu"]["type"]] = by_type.get(record["spec"]["gpu"]["type"], 0.0) + seconds
        assert figures[team]["gpu_seconds"] == pytest.approx(by_type, rel=1e-9)
        assert figures[team]["gpu_hours"] == pytest.approx(sum(by_type.values()) / 3600, rel=1e-9)
        prices = {**config.DEFAULT_GPU_PRICES, "A10G": 2.0}
        cost = sum(s / 3600 * prices[t] for t, s in by_type.items())
        assert figures[team]["estimated_cost_usd"] == pytest.approx(cost, abs=0.006)
    assert figures["alpha"]["jobs"]["succeeded"] == 2 and figures["alpha"]["jobs"]["cancelled"] == 1
    assert figures["beta"]["jobs"]["succeeded"] == 1
    started = [r for r in records(speedq, "--team", "alpha") if r["attempts"]]
    waits = sorted(r["attempts"][0]["started_at"] - r["created_at"] for r in started)
    assert figures["alpha"]["queue_wait"]["samples"] == len(waits) == 2
    assert figures["alpha"]["queue_wait"]["median_s"] == pytest.approx(waits[0], rel=1e-9)  # nearest rank
    assert figures["alpha"]["queue_wait"]["p95_s"] == pytest.approx(waits[-1], rel=1e-9)

    one = json.loads(speedq.run("stats", "--team", "beta", "--json", check=True).stdout)
    assert [s["team"] for s in one] == ["beta"]
    table = speedq.run("stats", check=True).stdout
    assert "alpha" in table and "beta" in table and "GPU-HOURS" in table


def test_a_bad_price_table_is_one_line(speedq: Speedq) -> None:
    speedq.submit("--team", "alpha")
    speedq.env["SPEEDQ_PRICES"] = '{"V100": 1}'
    done = speedq.run("stats")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "V100" in done.stderr
