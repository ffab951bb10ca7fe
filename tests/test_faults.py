"""Faults injected for real: the job survives each, losing at most one checkpoint interval,
and no job is lost or launched twice."""

from __future__ import annotations

import json
import time

from tests.conftest import STALL_TIMEOUT_S, Speedq, wait_for

SAVE_EVERY = 5


def run_with_fault(speedq: Speedq, faults: str, *args: str, timeout: float = 90) -> dict:
    # Steps slow enough that the runner reports each one before a fault kills it, as a real
    # (250 ms) step does; the recomputed-steps figures depend on what was seen.
    speedq.env.setdefault("SPEEDQ_SIM_STEP_S", "0.03")
    speedq.start_worker(env={"SPEEDQ_SIM_FAULTS": faults})
    job = speedq.submit("--team", "alpha", "--model", "d4", "--save-every", str(SAVE_EVERY), *args)
    return speedq.wait_state(job, "succeeded", "failed", timeout=timeout)


def test_preemption_resumes_from_newest_checkpoint(speedq: Speedq) -> None:
    record = run_with_fault(speedq, "preempt@23")

    assert record["state"] == "succeeded", record["error"]
    first, second = record["attempts"]
    assert first["outcome"] == "preempted"
    assert second["outcome"] == "succeeded"
    assert second["resumed_from_step"] == 20  # the newest checkpoint before step 23
    assert first["call_id"] != second["call_id"]
    # steps 20, 21 and 22 (0-based, as nanochat prints them) ran before the preemption and again after it
    assert record["steps_recomputed"] == 3
    shown = speedq.run("status", record["id"], check=True).stdout
    assert "preempted" in shown and "20" in shown


def test_torn_checkpoint_falls_back_to_the_one_before(speedq: Speedq) -> None:
    record = run_with_fault(speedq, "torn@25")

    assert record["state"] == "succeeded", record["error"]
    assert record["attempts"][0]["outcome"] == "preempted"
    assert record["attempts"][1]["resumed_from_step"] == 20  # step 25's checkpoint is torn


def test_crash_is_retried_then_gives_up_with_a_clear_error(speedq: Speedq) -> None:
    record = run_with_fault(speedq, "crash@12", "--max-attempts", "1")

    assert record["state"] == "failed"
    assert record["attempts"][0]["outcome"] == "crashed"
    assert "base_train" in record["error"]
    assert len(record["attempts"]) == 1


def test_crash_with_attempts_left_resumes(speedq: Speedq) -> None:
    record = run_with_fault(speedq, "crash@12")

    assert record["state"] == "succeeded", record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["crashed", "succeeded"]
    assert record["attempts"][1]["resumed_from_step"] == 10


def test_hung_run_is_ended_by_the_stall_detector_and_resumed(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_STALL_TIMEOUT"] = STALL_TIMEOUT_S
    record = run_with_fault(speedq, "hang@17")

    assert record["state"] == "succeeded", record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["stalled", "succeeded"]
    assert record["attempts"][1]["resumed_from_step"] == 15


def test_attempt_timeout_ends_the_attempt_and_the_next_resumes(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.05"
    # A loaded machine spends 2 s or more starting each attempt, so attempts make little
    # progress each; the fixture's doubling backoff would reach 50 s by the ninth.
    speedq.env["SPEEDQ_RETRY_BACKOFF"] = "0.01"
    speedq.start_worker()
    # 120 steps of 0.05 s outlast one 5 s attempt; d4's own 352 steps would need more attempts
    job = speedq.submit("--team", "alpha", "--model", "d4", "--save-every", "5", "--timeout", "5",
                        "--max-attempts", "10", "--train-arg", "num-iterations=120")

    record = speedq.wait_state(job, "succeeded", "failed", timeout=120)

    outcomes = [a["outcome"] for a in record["attempts"]]
    assert outcomes[0] == "timed_out"
    assert record["state"] == "succeeded", record["error"]
    resumed = [a["resumed_from_step"] for a in record["attempts"][1:]]
    assert all(step and step > 0 for step in resumed)  # never from scratch


def test_worker_killed_mid_run_is_reattached_not_relaunched(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.05"
    first = speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4", "--save-every", "10")
    wait_for(lambda: (speedq.status(job).get("progress") or {}).get("step"), timeout=60, what="training steps")
    call_id = speedq.status(job)["attempts"][0]["call_id"]

    speedq.kill_worker(first)
    killed_at = time.monotonic()
    speedq.start_worker()
    record = speedq.wait_state(job, "succeeded", "failed", timeout=120)

    assert record["state"] == "succeeded", record["error"]
    assert len(record["attempts"]) == 1  # exactly one launch
    assert record["attempts"][0]["call_id"] == call_id
    assert record["attempts"][0]["resumed_from_step"] in (None, 0)
    log = (speedq.home / "runs" / "alpha" / "d4" / "log.txt").read_text()
    assert log.count("step 00001/") == 1  # training ran once, not twice
    assert time.monotonic() - killed_at < 100


def test_redis_restart_loses_nothing(speedq_own_redis: Speedq, own_redis) -> None:
    sq = speedq_own_redis
    sq.env["SPEEDQ_SIM_STEP_S"] = "0.03"
    sq.start_worker()
    running = sq.submit("--team", "alpha", "--model", "d6")
    waiting = sq.submit("--team", "beta", "--smoke")
    wait_for(lambda: (sq.status(running).get("progress") or {}).get("step"), timeout=60, what="training steps")
    before = json.loads(sq.run("ls", "--json", check=True).stdout)

    own_redis.restart(down_for=2.0)

    after = {r["id"]: r for r in json.loads(sq.run("ls", "--json", check=True).stdout)}
    assert set(after) == {r["id"] for r in before}
    for job in (running, waiting):
        record = sq.wait_state(job, "succeeded", "failed", timeout=120)
        assert record["state"] == "succeeded", record["error"]
    assert len(sq.status(running)["attempts"]) == 1


def test_unreadable_progress_file_does_not_break_the_job(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.03"
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4")
    wait_for(lambda: (speedq.status(job).get("progress") or {}).get("step"), timeout=60, what="training steps")
    progress = speedq.home / "runs" / "alpha" / "d4" / "progress.json"

    progress.write_text("{not json")
    shown = speedq.run("status", job)

    assert shown.returncode == 0 and "running" in shown.stdout
    record = speedq.wait_state(job, "succeeded", "failed", timeout=60)
    assert record["state"] == "succeeded", record["error"]
    assert len(record["attempts"]) == 1
