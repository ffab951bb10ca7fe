"""One scene for the dashboard and metrics tests: two teams' jobs in every kind of state, run by
a real sim worker and served by a real `speedq api`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api_server import start_api
from tests.conftest import RedisServer, Speedq, make_speedq
from tests.teams_helpers import add_team

WORKER = "dash-worker"


@dataclass(frozen=True)
class Scene:
    speedq: Speedq
    base_url: str
    tokens: dict[str, str]
    preempted: str  # alpha's d4 run: preempted at step 23, resumed from step 20, succeeded
    smoke: str  # beta's smoke run, succeeded
    waiting_high: str  # beta's, queued for the local backend nobody serves
    waiting_low: str
    cancelled: str  # alpha's, cancelled while queued


def two_teams(speedq: Speedq) -> Scene:
    tokens = {team: add_team(speedq, team) for team in ("alpha", "beta")}
    # Steps slow enough for the worker to see several before the fault; the curve needs points.
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.02"
    waiting_high = _submit_local(speedq, "beta", "waiting-high", "high")
    waiting_low = _submit_local(speedq, "beta", "waiting-low", "low")
    cancelled = _submit_local(speedq, "alpha", "dropped", "normal")
    speedq.run("cancel", cancelled, "--team", "alpha", check=True)
    speedq.start_worker("--name", WORKER, env={"SPEEDQ_SIM_FAULTS": "preempt@23"})
    preempted = speedq.submit("--team", "alpha", "--model", "d4", "--save-every", "5")
    smoke = speedq.submit("--team", "beta", "--smoke")
    base_url = start_api(speedq)
    for job in (preempted, smoke):
        speedq.wait_state(job, "succeeded", timeout=180)  # a preempted d4 run: two attempts
    return Scene(speedq, base_url, tokens, preempted, smoke, waiting_high, waiting_low, cancelled)


def _submit_local(speedq: Speedq, team: str, run_name: str, priority: str) -> str:
    done = speedq.run("submit", "--team", team, "--backend", "local", "--run-name", run_name,
                      "--priority", priority, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def scene(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """The scene, set once for a module's tests, which only read it."""
    redis_server.client().flushall()
    speedq = make_speedq(redis_server, tmp_path_factory.mktemp("scene"))
    try:
        yield two_teams(speedq)
    finally:
        speedq.stop_all()
