"""The preflight (issue 12), for real on the sim: a multi-GPU full run first runs the same commit
and options for 20 steps on one GPU; a broken fork fails there, and its 8-GPU run never starts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from speedq import config
from speedq.gpu import layout
from tests.api_server import start_api
from tests.browser import rendered
from tests.conftest import Speedq, wait_for
from tests.sim_forks import SHAPE_ERROR, broken_fork

PREFLIGHT = "preflight"


def run_dir(speedq: Speedq, run: str) -> Path:
    return speedq.home / "runs" / "alpha" / run


def test_a_broken_fork_fails_in_preflight_and_its_8_gpu_run_never_starts(speedq: Speedq) -> None:
    commit = broken_fork(speedq.home, crash_at=7)
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4", "--gpu", "H100:8", "--repo-ref", "broken",
                        "--run-name", "fork", preflight=True)
    record = speedq.wait_state(job, "succeeded", "failed", timeout=90)

    assert record["state"] == "failed"
    assert record["nanochat_commit"] == commit
    (only,) = record["attempts"]  # one attempt: the preflight, not retried, and no 8-GPU launch
    assert only["preflight"] and only["gpu_count"] == 1 and only["outcome"] == "crashed"
    preflight_log = run_dir(speedq, "fork") / PREFLIGHT / layout.LOG
    assert record["preflight"]["state"] == "failed"
    assert record["preflight"]["log"]["path"] == str(preflight_log)
    assert record["log"]["path"] == str(preflight_log)
    # one line: what failed, the fork's own error, and where to read the rest
    assert "preflight (20 steps on H100:1) failed" in record["error"]
    assert SHAPE_ERROR in record["error"] and str(preflight_log) in record["error"]
    assert record["preflight_gpu_seconds"] == record["gpu_seconds"] > 0
    # the full run's directory holds nothing of a run: no log, no checkpoint, no claim
    main = run_dir(speedq, "fork")
    assert sorted(p.name for p in main.iterdir()) == [PREFLIGHT]
    assert "on H100:1" in preflight_log.read_text() and SHAPE_ERROR in preflight_log.read_text()

    shown = speedq.run("status", job, check=True).stdout
    assert "failed: 20 steps on H100:1" in shown and SHAPE_ERROR in shown
    assert SHAPE_ERROR in speedq.run("logs", job, "--tail", "20", check=True).stdout

    base_url = start_api(speedq)  # the dashboard, which needs no token, says it failed in preflight
    public = httpx.get(f"{base_url}/dashboard/api/jobs/{job}").json()
    assert public["preflight"] == "failed" and [a["preflight"] for a in public["attempts"]] == [True]
    page = rendered(f"{base_url}/#/jobs/{job}")
    facts = page.one("dl", id="facts")
    shown = dict(zip((dt.text for dt in facts.all("dt")), (dd.text for dd in facts.all("dd"))))
    assert shown["Preflight"] == "failed" and shown["Tries"] == "0/3"
    assert [(r[0], r[3]) for r in page.one("table", id="attempts").rows()] == [("1 (preflight)", "crashed")]


def test_a_good_commit_passes_preflight_then_runs_in_full_from_scratch(speedq: Speedq) -> None:
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4", "--gpu", "H100:8", "--save-every", "100",
                        "--train-arg", "num-iterations=60", preflight=True)
    record = speedq.wait_state(job, "succeeded", "failed", timeout=120)

    assert record["state"] == "succeeded", record["error"]
    pre, full = record["attempts"]
    assert (pre["preflight"], pre["gpu_count"], pre["outcome"]) == (True, 1, "succeeded")
    assert (full["preflight"], full["gpu_count"], full["outcome"]) == (False, 8, "succeeded")
    assert full["resumed_from_step"] is None  # the preflight's checkpoints are its own
    assert pre["final_step"] == config.PREFLIGHT_STEPS and full["final_step"] == 60
    assert record["preflight"]["state"] == "passed" and record["preflight"]["final_step"] == config.PREFLIGHT_STEPS
    assert record["steps_recomputed"] == 0
    assert 0 < record["preflight_gpu_seconds"] < record["gpu_seconds"]

    main, pre_dir = run_dir(speedq, "d4"), run_dir(speedq, "d4") / PREFLIGHT
    assert record["log"]["path"] == str(main / layout.LOG)
    pre_log = (pre_dir / layout.LOG).read_text()
    # one GPU, the full run's device batch (H100's 16 holds the batch rule at 8 GPUs), no evals
    assert "on H100:1" in pre_log and "--device-batch-size=16" in pre_log and "--eval-every=-1" in pre_log
    assert "Validation bpb" not in pre_log
    assert "base_eval" not in pre_log  # a preflight stops after base training
    assert sorted(p.name for p in (pre_dir / "base_checkpoints" / "d4").glob("model_*.pt")) == [
        "model_000010.pt", "model_000020.pt"]
    assert not (main / "base_checkpoints" / "d4" / "model_000020.pt").exists()  # 60-step run, saves at 60
    assert "on H100:8" in (main / layout.LOG).read_text()
    shown = speedq.run("status", job, check=True).stdout
    assert "passed: 20 steps on H100:1" in shown and "1 (preflight)" in shown


def test_no_preflight_launches_the_8_gpu_run_at_once(speedq: Speedq) -> None:
    broken_fork(speedq.home, crash_at=7)
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4", "--gpu", "H100:8", "--repo-ref", "broken",
                        "--max-attempts", "1")  # speedq.submit adds --no-preflight
    record = speedq.wait_state(job, "succeeded", "failed", timeout=90)

    assert record["spec"]["preflight"] is False
    assert record["state"] == "failed" and SHAPE_ERROR in record["error"]
    assert [(a["preflight"], a["gpu_count"]) for a in record["attempts"]] == [(False, 8)]
    assert record["preflight"] is None
    assert not (run_dir(speedq, "d4") / PREFLIGHT).exists()
    assert "skipped (--no-preflight)" in speedq.run("status", job, check=True).stdout


def test_a_worker_killed_during_preflight_is_reattached_and_the_full_run_follows(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.6"  # 20 steps: about 12 s of preflight to look at and kill a worker in
    first = speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d4", "--gpu", "H100:4", "--train-arg", "num-iterations=22",
                        preflight=True)

    def preflight_training() -> bool:
        record = speedq.status(job)
        return record["in_preflight"] and ((record.get("progress") or {}).get("step") or 0) >= 2

    try:
        wait_for(preflight_training, timeout=120, what="the preflight's training steps")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {speedq.status(job)}") from None
    speedq.env["COLUMNS"] = "200"  # rich's width when not on a terminal: whole rows
    shown = speedq.run("status", job, check=True).stdout
    assert "preflight: base_train (1 GPU)" in shown, shown
    row = next(line for line in speedq.run("ls", check=True).stdout.splitlines() if job in line)
    assert "running" in row and "preflight" in row
    call_id = speedq.status(job)["attempts"][0]["call_id"]
    speedq.kill_worker(first)
    time.sleep(0.5)
    speedq.start_worker()
    record = speedq.wait_state(job, "succeeded", "failed", timeout=180)

    assert record["state"] == "succeeded", record["error"]
    pre, full = record["attempts"]
    assert pre["preflight"] and pre["call_id"] == call_id and pre["outcome"] == "succeeded"  # reattached
    assert not full["preflight"] and full["outcome"] == "succeeded"
    pre_log = (run_dir(speedq, "d4") / PREFLIGHT / layout.LOG).read_text()
    assert pre_log.count("==== speedq attempt") == 1 and pre_log.count("step 00001/") == 1  # ran once
    assert record["preflight"]["state"] == "passed"
