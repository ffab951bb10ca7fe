"""Fair share: one worker, three teams with skewed queues; the start order interleaves them."""

from __future__ import annotations

import contextlib
import threading

import redis

from speedq.keys import Keys
from tests.conftest import Speedq, wait_for
from tests.teams_helpers import records


def test_skewed_queues_are_served_in_turn_and_by_priority_within_a_team(speedq: Speedq) -> None:
    for i in range(7):
        speedq.submit("--team", "a", "--smoke", "--run-name", f"a{i}")
    urgent = speedq.submit("--team", "a", "--smoke", "--run-name", "urgent", "--priority", "high")
    for i in range(3):
        speedq.submit("--team", "b", "--smoke", "--run-name", f"b{i}")
    speedq.submit("--team", "c", "--smoke", "--run-name", "c0")

    worker = speedq.start_worker("--burst")
    wait_for(lambda: worker.poll() is not None, timeout=120, what="the burst worker to drain the queues")

    started = sorted(records(speedq), key=lambda r: r["attempts"][0]["started_at"])
    assert all(r["state"] == "succeeded" for r in started), [(r["id"], r["error"]) for r in started]
    order = [r["spec"]["team"] for r in started]
    # One turn per team per job started: a's eight queued jobs cannot starve c's one.
    assert order == ["a", "b", "c", "a", "b", "a", "b", "a", "a", "a", "a", "a"], order
    assert started[0]["id"] == urgent  # within a team, priority first


def test_a_team_first_seen_after_the_worker_started_is_served(speedq: Speedq) -> None:
    speedq.start_worker()
    first = speedq.submit("--team", "early", "--smoke")
    speedq.wait_state(first, "succeeded", timeout=60)

    late = speedq.submit("--team", "late-comer", "--smoke")

    assert speedq.wait_state(late, "succeeded", "failed", timeout=60)["state"] == "succeeded"


def test_three_workers_share_one_rotation_over_five_teams(speedq: Speedq) -> None:
    """The rotation lives in Redis: three idle workers starting together take three different
    teams, and every team gets its turn before any gets a second."""
    teams = ["a", "b", "c", "d", "e"]
    for i in range(3):
        for team in teams:
            speedq.submit("--team", team, "--smoke", "--run-name", f"{team}{i}")
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.1"  # each job holds its worker for about a second
    # The order of the pops themselves, as Redis ran them: each pop gives its team the next turn
    # number (a ZADD from inside the pop's script, which MONITOR shows with its arguments). A
    # worker's own timestamps would say when a busy work horse got round to the job instead.
    turns: list[tuple[int, str]] = []
    watching = threading.Event()

    def watch() -> None:
        # It watches until the test's Redis goes away, which ends it with whichever error that is.
        with contextlib.suppress(redis.RedisError), \
                redis.Redis.from_url(speedq.env["SPEEDQ_REDIS_URL"]).monitor() as monitor:
            watching.set()
            for command in monitor.listen():
                words = command["command"].split()
                if words[0].lower() == "zadd" and words[1] == Keys.turns:
                    turns.append((int(words[2]), words[3]))

    threading.Thread(target=watch, daemon=True).start()
    assert watching.wait(10)
    workers = [speedq.start_worker("--burst") for _ in range(3)]
    for worker in workers:
        wait_for(lambda w=worker: w.poll() is not None, timeout=180, what="the burst workers to drain the queues")

    assert all(r["state"] == "succeeded" for r in records(speedq)), [(r["id"], r["error"]) for r in records(speedq)]
    order = [team for _, team in sorted(turns)]
    assert len(order) == 15, order  # one turn per job started
    assert len(set(order[:3])) == 3, order  # not every worker starting with team a
    for turn in range(3):  # one job per team per round, whichever worker took it
        assert sorted(order[5 * turn : 5 * turn + 5]) == teams, order
