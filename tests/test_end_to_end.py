"""speedq from a user's seat: submit from the CLI, real RQ workers, the sim backend, status back."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Speedq, wait_for


def test_smoke_job_runs_to_succeeded_with_progress_and_log(speedq: Speedq) -> None:
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--smoke")
    assert job.startswith("sq-")

    record = speedq.wait_state(job, "succeeded", "failed", timeout=60)

    assert record["state"] == "succeeded", record["error"]
    assert record["progress"]["step"] == record["progress"]["total"] == 10
    assert len(record["nanochat_commit"]) == 40
    assert record["attempts"][0]["outcome"] == "succeeded"
    assert record["attempts"][0]["call_id"]
    log = speedq.run("logs", job, check=True).stdout
    assert "step 00009/00010" in log  # nanochat prints 0-based steps: the tenth is 00009
    assert record["log"]["path"].endswith("runs/alpha/d12-smoke/log.txt")
    assert Path(record["log"]["path"]).exists()
    table = speedq.run("status", job, check=True).stdout
    assert "succeeded" in table and "10/10" in table and record["nanochat_commit"] in table


def test_submit_says_what_it_queued_in_one_line(speedq: Speedq) -> None:
    done = speedq.run("submit", "--backend", "sim", "--team", "alpha", "--smoke", check=True)
    said = " ".join(done.stderr.split())  # rich wraps at the pipe's 80 columns
    assert said == "queued alpha/d12-smoke: karpathy/nanochat@92d63d4 d12 smoke on H100:8 via sim"
    fork = speedq.run("submit", "--backend", "sim", "--team", "alpha", "--repo", "https://github.com/alice/nanochat",
                      "--repo-ref", "fast-muon", "--model", "d4", check=True)
    said = " ".join(fork.stderr.split())
    assert said == "queued alpha/alice-nanochat-d4: alice/nanochat@fast-muon d4 full on H100:8 via sim"


def test_full_job_runs_every_stage_and_checkpoints(speedq: Speedq) -> None:
    speedq.start_worker()
    job = speedq.submit("--team", "beta", "--model", "d4")

    record = speedq.wait_state(job, "succeeded", "failed", timeout=90)

    assert record["state"] == "succeeded", record["error"]
    progress = record["progress"]
    assert progress["checkpoint_step"] is not None and progress["checkpoint_step"] > 0
    run_dir = Path(record["run_dir"])
    assert run_dir == speedq.home / "runs" / "beta" / "d4"
    ckpts = sorted((run_dir / "base_checkpoints" / "d4").glob("model_*.pt"))
    assert len(ckpts) >= 2  # periodic saves, not only the final one
    log = (run_dir / "log.txt").read_text()
    stages = ("tok_train", "base_train", "base_eval", "chat_sft", "chat_eval")
    for module in (f"scripts.{stage}" for stage in stages):
        assert module in log
    tail = speedq.run("logs", job, "--tail", "3", check=True).stdout
    assert len(tail.splitlines()) == 3 and tail.splitlines()[-1] == log.splitlines()[-1]


def test_same_run_while_active_returns_the_same_job(speedq: Speedq) -> None:
    first = speedq.submit("--team", "alpha", "--run-name", "shared")
    again = speedq.run("submit", "--backend", "sim", "--team", "alpha", "--run-name", "shared")
    other_team = speedq.submit("--team", "beta", "--run-name", "shared")

    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1] == first
    assert first in again.stderr and "already" in again.stderr
    assert other_team != first
    listed = json.loads(speedq.run("ls", "--json", check=True).stdout)
    assert sorted(r["id"] for r in listed) == sorted([first, other_team])


def test_ls_filters_and_orders_newest_first(speedq: Speedq) -> None:
    a1 = speedq.submit("--team", "alpha", "--run-name", "r1")
    b1 = speedq.submit("--team", "beta", "--run-name", "r1")
    a2 = speedq.submit("--team", "alpha", "--run-name", "r2")
    speedq.run("cancel", a1, "--team", "alpha", check=True)

    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json.loads(speedq.run("ls", "--json", *args, check=True).stdout)]

    assert ids() == [a2, b1, a1]
    assert ids("--team", "alpha") == [a2, a1]
    assert ids("--state", "cancelled") == [a1]
    assert ids("--state", "queued", "--team", "alpha") == [a2]
    assert ids("--limit", "2") == [a2, b1]
    assert ids("--team", "nobody") == []
    table = speedq.run("ls", "--team", "alpha", check=True).stdout
    assert a2 in table and a1 in table and b1 not in table


def test_cancel_queued_job_never_runs(speedq: Speedq) -> None:
    job = speedq.submit("--team", "alpha", "--smoke")
    denied = speedq.run("cancel", job, "--team", "beta")
    assert denied.returncode != 0 and "alpha" in denied.stderr

    speedq.run("cancel", job, "--team", "alpha", check=True)
    speedq.start_worker()
    marker = speedq.submit("--team", "alpha", "--smoke", "--run-name", "after")
    speedq.wait_state(marker, "succeeded", timeout=60)

    record = speedq.status(job)
    assert record["state"] == "cancelled"
    assert record["attempts"] == []
    assert not (speedq.home / "runs" / "alpha" / "d12-smoke").exists()


def test_cancel_running_job_stops_its_run(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.05"  # slow enough to catch it mid-training
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--model", "d8")
    def training() -> bool:
        return (speedq.status(job).get("progress") or {}).get("stage") == "base_train"

    wait_for(training, timeout=60, what="training")
    record = speedq.status(job)
    pid = int(record["attempts"][0]["call_id"].split("@")[0])

    speedq.run("cancel", job, "--team", "alpha", check=True)
    record = speedq.wait_state(job, "cancelled", timeout=30)

    assert record["attempts"][-1]["outcome"] == "cancelled"
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=10, what="runner to exit")
    again = speedq.run("cancel", job, "--team", "alpha")
    assert again.returncode == 2 and "already ended" in again.stderr


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_retry_a_cancelled_job_runs_it(speedq: Speedq) -> None:
    job = speedq.submit("--team", "alpha", "--smoke")
    speedq.run("cancel", job, "--team", "alpha", check=True)
    speedq.start_worker()

    speedq.run("retry", job, "--team", "alpha", check=True)
    record = speedq.wait_state(job, "succeeded", "failed", timeout=60)

    assert record["state"] == "succeeded"
    refused = speedq.run("retry", job, "--team", "alpha")
    assert refused.returncode == 2 and "only failed or cancelled" in refused.stderr


def test_json_outputs_parse(speedq: Speedq) -> None:
    job = json.loads(speedq.run("submit", "--backend", "sim", "--team", "alpha", "--json", check=True).stdout)
    assert job["state"] == "queued" and job["spec"]["team"] == "alpha"
    assert json.loads(speedq.run("status", job["id"], "--json", check=True).stdout)["id"] == job["id"]
    assert isinstance(json.loads(speedq.run("ls", "--json", check=True).stdout), list)
    cancelled = json.loads(speedq.run("cancel", job["id"], "--team", "alpha", "--json", check=True).stdout)
    assert cancelled["state"] == "cancelled"
