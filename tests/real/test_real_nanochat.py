"""speedq drives the real nanochat: through the CLI, a real `speedq worker --backend local` and
the runner, on the CPU, with a tiny model (nanochat's own runs/runcpu.sh settings, smaller).

The first test of a session pays torch.compile (100 to 150 s on 2 busy cores); the compile cache
is shared, so the others start in seconds (TORCHINDUCTOR_CACHE_DIR given from outside keeps it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from speedq.backends.local import LocalBackend
from speedq.gpu import layout
from speedq.gpu.runner import newest_complete_checkpoint
from tests.conftest import Speedq, wait_for
from tests.real import processes, tier_jobs
from tests.real.conftest import Nanochat

pytestmark = [pytest.mark.real, pytest.mark.timeout(1200)]

RUN_TIMEOUT_S = 900  # a cold compile on a busy 2-core machine
POLL_S = 0.3  # between `speedq status` calls (each is a Python start: polling flat out slows training)
STAGES_NEEDING_INTERNET = ("tok_eval", "base_eval", "chat_sft", "chat_eval")


def submit(sq: Speedq, nanochat: Nanochat, *args: str) -> str:
    done = sq.run("submit", "--team", "tier", "--backend", "local", "--gpu", tier_jobs.GPU, "--model", tier_jobs.MODEL,
                  "--repo-ref", nanochat.commit, *args, check=True)
    return done.stdout.strip().splitlines()[-1]


def log_of(sq: Speedq, job: str) -> str:
    return sq.run("logs", job, check=True).stdout


def watch_until_ended(sq: Speedq, job: str, timeout: float = RUN_TIMEOUT_S) -> tuple[dict, list[dict]]:
    """Poll `speedq status --json` as a user would until the job ends: (last record, every
    progress seen)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    record: dict = {}
    while time.monotonic() < deadline:
        record = sq.status(job)
        if record.get("progress"):
            seen.append(record["progress"])
        if record["state"] in ("succeeded", "failed", "cancelled"):
            return record, seen
        time.sleep(POLL_S)
    raise AssertionError(f"{job} did not end in {timeout}s; last record: {json.dumps(record)[:3000]}")


def assert_succeeded(record: dict, sq: Speedq) -> None:
    if record["state"] != "succeeded":
        log = log_of(sq, record["id"]) if record.get("run_dir") else ""
        worker_logs = "".join(p.read_text()[-2000:] for p in sq.home.glob("worker-*.log"))
        raise AssertionError(f"job {record['state']}: {record.get('error')}\n--- run log tail:\n{log[-4000:]}\n"
                             f"--- worker log tail:\n{worker_logs}")


def assert_offline_and_prepared(log: str, nanochat: Nanochat, tokenizer_before: bytes) -> None:
    """The runner used the data the tier prepared and said why it skipped the online stages."""
    for stage in STAGES_NEEDING_INTERNET:
        said = [line for line in log.splitlines() if stage in line and re.search(r"skip", line, re.I)]
        assert said, f"the log says nothing about skipping {stage} offline"
    assert "nanochat.dataset -n" not in log, "the runner downloaded shards although enough were there"
    assert "scripts.tok_train" not in log, "the runner trained a tokenizer although one was there"
    assert (nanochat.data_dir / "tokenizer" / "tokenizer.pkl").read_bytes() == tokenizer_before


def test_full_run_succeeds_with_progress_from_the_first_steps(real_speedq: Speedq, nanochat: Nanochat) -> None:
    """submit -> worker -> runner -> nanochat's stages -> succeeded; status shows step, total
    and loss from the first steps (before step 10, where nanochat prints no eta)."""
    tokenizer = (nanochat.data_dir / "tokenizer" / "tokenizer.pkl").read_bytes()
    real_speedq.start_worker(backend="local")
    job = submit(real_speedq, nanochat, "--run-name", "full", *tier_jobs.flags(tier_jobs.FULL))

    record, seen = watch_until_ended(real_speedq, job)

    assert_succeeded(record, real_speedq)
    early = [p for p in seen if p.get("stage") == "base_train" and p.get("step") is not None and p["step"] < 10
             and p.get("total") is not None and p.get("loss") is not None]
    assert early, f"status never showed a step below 10 with its total and loss; seen: {seen[-20:]}"
    assert {p["total"] for p in early} == {tier_jobs.FULL["num-iterations"]}
    assert all(0 < p["loss"] < 20 for p in early)  # a cross-entropy over 4,096 tokens starts near ln 4096 = 8.3
    assert record["progress"]["stage"] == "done"
    assert record["progress"]["total"] == tier_jobs.FULL["num-iterations"]
    assert len(record["attempts"]) == 1 and record["attempts"][0]["outcome"] == "succeeded"
    run_dir = Path(record["run_dir"])
    newest = newest_complete_checkpoint(run_dir / layout.checkpoint_dir(tier_jobs.MODEL), 1)
    assert newest == tier_jobs.FULL["num-iterations"]
    log = log_of(real_speedq, job)
    steps = tier_jobs.FULL["num-iterations"]
    assert f"step {steps - 1:05d}/{steps:05d}" in log and "Total training time:" in log  # nanochat's own lines
    assert_offline_and_prepared(log, nanochat, tokenizer)
    assert_results_as_printed(record, log)


def assert_results_as_printed(record: dict, log: str) -> None:
    """The job's results are what this commit's base_train printed (a CPU prints no CORE)."""
    res, steps = record["results"], tier_jobs.FULL["num-iterations"]
    bpb = [float(m[2]) for m in re.finditer(r"^Step (\d+) \| Validation bpb: ([\d.]+)$", log, re.M)]
    assert len(bpb) == 3 and res["val_bpb"] == bpb[-1] and res["min_val_bpb"] == min(bpb), (bpb, res)
    assert f"Minimum validation bpb: {res['min_val_bpb']:.6f}" in log
    assert res["steps"] == steps and res["tokens"] == steps * tier_jobs.FULL["total-batch-size"]
    assert f"Total number of training tokens: {res['tokens']:,}" in log
    assert f"Total training FLOPs estimate: {res['total_flops']:e}" in log
    assert f"Total training time: {res['training_time_s'] / 60:.2f}m" in log
    timed = [int(m[1].replace(",", "")) for m in re.finditer(r"^step 0001[1-9]/.*tok/sec: ([\d,]+)", log, re.M)]
    assert timed and res["tokens_per_s"] == pytest.approx(sum(timed) / len(timed))
    assert res["core_metric"] is None and res["gpu_type"] == "CPU" and res["cost_usd"] == 0.0
    assert res["gpu_hours"] > 0 and res["beats_gpt2"] is False


def test_smoke_job_succeeds(real_speedq: Speedq, nanochat: Nanochat) -> None:
    from speedq import config

    real_speedq.start_worker(backend="local")
    job = submit(real_speedq, nanochat, "--smoke", *tier_jobs.flags(tier_jobs.SMOKE))

    record, seen = watch_until_ended(real_speedq, job)

    assert_succeeded(record, real_speedq)
    assert record["spec"]["mode"] == "smoke"
    assert any(p.get("step") is not None and p.get("total") == config.SMOKE_STEPS and p.get("loss") is not None
               for p in seen), f"status never showed a smoke step with its total and loss; seen: {seen[-20:]}"
    assert record["progress"]["stage"] == "done"
    ckpt_dir = Path(record["run_dir"]) / layout.checkpoint_dir(tier_jobs.MODEL, "smoke")
    assert newest_complete_checkpoint(ckpt_dir, 1) == config.SMOKE_STEPS
    assert f"step {config.SMOKE_STEPS - 1:05d}/{config.SMOKE_STEPS:05d}" in log_of(real_speedq, job)


def test_sigkill_of_the_runner_resumes_from_the_real_checkpoint_with_one_training_at_a_time(
    real_speedq: Speedq, nanochat: Nanochat
) -> None:
    """SIGKILL the runner (as the OOM killer would) once nanochat has saved a checkpoint. Its
    training must end with it before the next attempt trains in the same run dir, which resumes
    from that checkpoint with --resume-from-step and finishes."""
    steps = tier_jobs.KILLED_STEPS
    run_dir = real_speedq.home / "runs" / "tier" / "killed"
    ckpt_dir = run_dir / layout.checkpoint_dir(tier_jobs.MODEL)
    real_speedq.start_worker(backend="local")

    with processes.TrainingWatcher(run_dir) as watcher:
        job = submit(real_speedq, nanochat, "--run-name", "killed", "--save-every", "5", "--max-attempts", "3",
                     *tier_jobs.flags(tier_jobs.KILLED))
        call_id = wait_for(lambda: (real_speedq.status(job)["attempts"] or [{}])[-1].get("call_id"), timeout=120,
                           every=0.3, what="the first attempt's launch")
        runner_pid, _, _ = LocalBackend.parse_call_id(str(call_id))  # the local backend's handle: pid@ticks:run dir
        saved = wait_for(lambda: newest_complete_checkpoint(ckpt_dir, 1), timeout=RUN_TIMEOUT_S, every=0.05,
                         what="nanochat's first checkpoint")
        alive = processes.in_run_dir(run_dir)  # torchrun and the training
        os.kill(runner_pid, signal.SIGKILL)
        assert any(processes.is_training(p.argv) for p in alive), "nothing was training when the checkpoint appeared"

        record, _ = watch_until_ended(real_speedq, job)
        wait_for(lambda: not processes.in_run_dir(run_dir), timeout=30, what="no nanochat process left in the run dir")

    assert_succeeded(record, real_speedq)
    assert watcher.most == 1, f"two trainings in {run_dir} at once: {watcher.crowded[:5]}"
    assert len(watcher.trained) >= 2, f"the watcher saw only trainings {watcher.trained} ({watcher.samples} samples)"
    overlap = watcher.overlap(alive)
    assert not overlap, f"the killed attempt's processes outlived the next one's start:\n{watcher.describe(overlap)}"
    attempts = record["attempts"]
    assert len(attempts) >= 2 and attempts[0]["outcome"] != "succeeded"
    last = attempts[-1]
    assert last["outcome"] == "succeeded"
    resumed = last["resumed_from_step"]
    assert resumed is not None and resumed >= saved and resumed % 5 == 0, attempts
    log = log_of(real_speedq, job)
    assert f"--resume-from-step={resumed}" in log
    assert f"Resuming optimization from step {resumed}" in log  # nanochat's own word that it resumed
    assert newest_complete_checkpoint(ckpt_dir, 1) == steps
    assert record["progress"]["stage"] == "done"
