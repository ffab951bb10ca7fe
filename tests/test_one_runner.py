"""Exactly one runner and one training process per run directory at every moment, under the
faults of issue 10 and issue 9 item 6, with real workers, real runners and real signals. A
watcher thread samples the process table throughout each test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from speedq.gpu import fence, proctree
from speedq.settings import env_name
from tests.conftest import STALL_TIMEOUT_S, Speedq, wait_for
from tests.proctable import ProcessWatch

KILL_AFTER_LAUNCH_ENV = env_name("test_kill_after_launch")

FIGURES: dict[str, dict[str, int]] = {}  # fault -> the most seen at once, printed at the end


def run_dir(speedq: Speedq) -> Path:
    return speedq.home / "runs" / "alpha" / "d4"


def submit(speedq: Speedq, *args: str) -> str:
    return speedq.submit("--team", "alpha", "--model", "d4", "--save-every", "5", *args)


def steps_seen(speedq: Speedq, job: str, at_least: int = 1) -> None:
    wait_for(lambda: ((speedq.status(job).get("progress") or {}).get("step") or 0) >= at_least,
             timeout=60, what=f"{job} to train {at_least} steps")


def finish(speedq: Speedq, watch: ProcessWatch, job: str, fault: str, *states: str) -> dict:
    record = speedq.wait_state(job, *(states or ("succeeded", "failed")), timeout=120)
    assert proctree.marked(run_dir(speedq)) == []  # nothing of the job is left running
    most = watch.most_for(run_dir(speedq))
    FIGURES[fault] = most
    print(f"\n{fault}: most alive at once for the run dir: {most} ({watch.samples} samples)")
    assert watch.samples > 100
    assert most == {"runner": 1, "training": 1}, most
    return record


@pytest.fixture(autouse=True)
def slow_steps(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.05"


def test_worker_killed_in_the_launch_window_is_adopted_not_relaunched(speedq: Speedq) -> None:
    with ProcessWatch() as watch:
        first = speedq.start_worker(env={KILL_AFTER_LAUNCH_ENV: "1"})
        job = submit(speedq)
        first.wait(timeout=60)  # it SIGKILLed itself right after the launch
        record = speedq.status(job)
        assert record["attempts"][0]["call_id"] is None  # the launch was never confirmed
        note = wait_for(lambda: fence.read_announcement(run_dir(speedq), 1), timeout=30, what="the announcement")
        assert proctree.start_ticks(note.pid) is not None  # its runner trains on, unwatched
        speedq.start_worker()
        record = finish(speedq, watch, job, "worker SIGKILL in the launch window")

    assert record["state"] == "succeeded", record["error"]
    assert len(record["attempts"]) == 1  # adopted, never launched twice
    assert record["attempts"][0]["call_id"] == note.call_id
    log = (run_dir(speedq) / "log.txt").read_text()
    assert log.count("step 00001/") == 1


def test_worker_killed_mid_run(speedq: Speedq) -> None:
    with ProcessWatch() as watch:
        first = speedq.start_worker()
        job = submit(speedq)
        steps_seen(speedq, job)
        speedq.kill_worker(first)
        speedq.start_worker()
        record = finish(speedq, watch, job, "worker SIGKILL mid-run")
    assert record["state"] == "succeeded", record["error"]
    assert len(record["attempts"]) == 1


def test_runner_killed_leaves_its_training_which_ends_before_the_next_attempt(speedq: Speedq) -> None:
    with ProcessWatch() as watch:
        speedq.start_worker()
        job = submit(speedq)
        steps_seen(speedq, job, at_least=7)
        runner_pid = int(speedq.status(job)["attempts"][0]["call_id"].partition("@")[0])
        training = [pid for pid in proctree.marked(run_dir(speedq)) if os.getsid(pid) != os.getsid(runner_pid)]
        assert training, "the training runs in a session of its own, as under torchrun"
        os.killpg(runner_pid, signal.SIGKILL)  # the runner's whole session; the training's survives it
        record = finish(speedq, watch, job, "runner SIGKILL")
    assert record["state"] == "succeeded", record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["preempted", "succeeded"]
    assert record["attempts"][1]["resumed_from_step"] >= 5


def test_timeout_relaunch(speedq: Speedq) -> None:
    with ProcessWatch() as watch:
        # As in test_faults: a loaded machine spends 2 s or more starting each attempt, and the
        # fixture's doubling backoff would reach 50 s by the ninth.
        speedq.env["SPEEDQ_RETRY_BACKOFF"] = "0.01"
        speedq.start_worker()
        # 120 steps of 0.05 s: past one 5 s attempt on any machine, and a few attempts under load.
        job = submit(speedq, "--timeout", "5", "--max-attempts", "10", "--train-arg", "num-iterations=120")
        record = finish(speedq, watch, job, "attempt timeout and relaunch")
    assert record["state"] == "succeeded", record["error"]
    assert record["attempts"][0]["outcome"] == "timed_out"


def test_stall_relaunch(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_STALL_TIMEOUT"] = STALL_TIMEOUT_S
    with ProcessWatch() as watch:
        speedq.start_worker(env={"SPEEDQ_SIM_FAULTS": "hang@17"})
        job = submit(speedq)
        record = finish(speedq, watch, job, "stall and relaunch")
    assert record["state"] == "succeeded", record["error"]
    assert [a["outcome"] for a in record["attempts"]] == ["stalled", "succeeded"]


def test_cancel_ends_the_whole_tree(speedq: Speedq) -> None:
    with ProcessWatch() as watch:
        speedq.start_worker()
        job = submit(speedq)
        steps_seen(speedq, job)
        speedq.run("cancel", job, "--team", "alpha", check=True)
        record = finish(speedq, watch, job, "cancel", "cancelled")
    assert record["attempts"][0]["outcome"] == "cancelled"


def test_the_watcher_sees_a_second_training(tmp_path: Path) -> None:
    """The figures above could show a 2: two training processes outside the fence are counted."""
    run = tmp_path / "run"
    env = {**os.environ, proctree.MARK_ENV: str(run)}  # no attempt: no fence, no lock
    argv = [sys.executable, "-m", "speedq.gpu.rank", "timeit", "-n", "1", "import time; time.sleep(30)"]
    procs = [subprocess.Popen(argv, env=env) for _ in range(2)]
    try:
        with ProcessWatch() as watch:
            wait_for(lambda: watch.most_for(run)["training"] == 2, timeout=10, what="two trainings counted")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
