"""The contract between the sim and real nanochat: the runner's parsers read the same things from
both. Real output was recorded from nanochat's base_train on a CPU (tests/data/nanochat/,
base_train_cpu_README.txt says how); the sim runs the same scenarios here, with the same flags."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from speedq.gpu import data_files, nanochat, nanochat_log, runner
from speedq.schemas import RunRequest
from speedq.sim import SIM_TREE

DATA = Path(__file__).parent / "data" / "nanochat"
COMMON = ["--depth=2", "--head-dim=64", "--window-pattern=L", "--max-seq-len=128", "--device-batch-size=4",
          "--total-batch-size=512", "--run=dummy", "--core-metric-every=-1", "--sample-every=-1", "--eval-every=10",
          "--eval-tokens=2048"]
SCENARIOS = {  # recorded file -> the sim's argv for the same run, in the order they ran
    "base_train_cpu_20steps.txt": [*COMMON, "--num-iterations=20", "--save-every=5"],
    "base_train_cpu_resume10.txt": [*COMMON, "--num-iterations=20", "--save-every=5", "--resume-from-step=10"],
    "base_train_cpu_batch_assert.txt": ["--depth=2", "--head-dim=64", "--window-pattern=L", "--max-seq-len=128",
                                        "--device-batch-size=3", "--total-batch-size=512", "--run=dummy",
                                        "--num-iterations=5", "--model-tag=bad"],
    "base_train_cpu_auto_batch.txt": ["--depth=2", "--head-dim=64", "--window-pattern=L", "--max-seq-len=128",
                                      "--device-batch-size=16", "--run=dummy", "--num-iterations=2",
                                      "--core-metric-every=-1", "--sample-every=-1", "--eval-every=-1",
                                      "--model-tag=auto"],
}
SAVE_EVERY = 5
REAL_VOCAB = 455  # what tok_train made of the recording's synthetic text


def recorded(name: str) -> tuple[list[str], int]:
    lines = (DATA / name).read_text().splitlines()
    code = int(lines[-1].removeprefix("exit "))
    return lines[:-1], code


@pytest.fixture(scope="module")
def sim_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], int]]:
    base = tmp_path_factory.mktemp("simbase")
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "WORLD_SIZE": "1", "SPEEDQ_SIM_STEP_S": "0.001",
           "SPEEDQ_SIM_FAULTS": "", "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*argv: str) -> tuple[list[str], int]:
        done = subprocess.run([sys.executable, "-m", *argv], cwd=SIM_TREE, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        return done.stdout.splitlines(), done.returncode

    run("nanochat.dataset", "-n", "4")
    run("scripts.tok_train", f"--vocab-size={REAL_VOCAB}")
    return {name: run("scripts.base_train", *argv) for name, argv in SCENARIOS.items()}


def reading(lines: list[str], code: int) -> dict[str, object]:
    """What speedq's runner reads from a base_train's output: the contract."""
    summary = nanochat_log.read(lines)
    req = RunRequest(job_id="sq-1", attempt=1, model="d2", mode="full", nproc=1, gpu_type="CPU", commit="c",
                     repo="r", run_dir="/nonexistent", data_dir="/nonexistent", cache_dir="/nonexistent")
    attempt = runner.Attempt(req=req, log_path=Path("/nonexistent"), save_every=SAVE_EVERY)
    flushes = [s.index for line in lines if attempt.parse(line) and (s := nanochat_log.step_line(line))]
    resumed = [int(m[1]) for line in lines if (m := re.match(r"Resuming optimization from step (\d+)", line))]
    return {
        "exit": code,
        "steps": [(s.index, s.total, s.loss is not None, s.eta_s is not None) for s in summary.steps],
        "steps done": (attempt.progress.step, attempt.progress.total),
        "val bpb at": [step for step, _ in summary.val_bpb],
        "auto batch": summary.total_batch_size,
        "iterations": summary.num_iterations,
        "training time read": summary.training_time_s is not None,
        "tokens": summary.tokens,
        "FLOPs": summary.total_flops,
        "timed steps": [s.index for s in summary.steps if nanochat_log.timed(s)],
        "means read": summary.means() is not None,
        "means in progress": (attempt.progress.timed_steps, attempt.progress.tokens_per_s is not None,
                              attempt.progress.mfu_pct is not None),
        "min val bpb read": summary.min_val_bpb is not None,
        "batch assertion": summary.batch_assertion,
        "last done": summary.last_done,
        "flushes after a save": flushes,
        "resumed from": resumed,
    }


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_runner_reads_the_sim_as_it_reads_real_nanochat(name: str, sim_outputs: dict) -> None:
    real = reading(*recorded(name))
    assert reading(*sim_outputs[name]) == real


def test_what_the_real_recordings_say() -> None:
    """Pinned facts of real nanochat, so a re-recording that changes them is noticed."""
    full = reading(*recorded("base_train_cpu_20steps.txt"))
    assert [s[0] for s in full["steps"]] == list(range(20))  # 0-based
    assert [s[0] for s in full["steps"] if s[3]] == list(range(11, 20))  # eta only after step 10
    assert full["steps done"] == (20, 20) and full["last done"] == 20
    assert full["val bpb at"] == [0, 10, 20] and full["flushes after a save"] == [5, 10, 15]
    assert full["tokens"] == 20 * 512 and full["FLOPs"] == 3.221520e10  # base_train's own estimate
    assert full["timed steps"] == list(range(11, 20))  # as base_train's `if step > 10` times them
    resumed = reading(*recorded("base_train_cpu_resume10.txt"))
    assert resumed["resumed from"] == [10] and resumed["steps"][0][0] == 10
    assert reading(*recorded("base_train_cpu_batch_assert.txt"))["batch assertion"] == (512, 384)
    auto = reading(*recorded("base_train_cpu_auto_batch.txt"))
    assert auto["auto batch"] == nanochat.size_run(
        2, "full", "CPU", 1, {"head-dim": 64, "max-seq-len": 128, "device-batch-size": 16, "num-iterations": 2,
                              "target-param-data-ratio": 12.0}, vocab_size=REAL_VOCAB).total_batch_size == 65536


def test_last_logged_step_reads_a_log_with_only_early_steps(tmp_path: Path) -> None:
    lines, _ = recorded("base_train_cpu_20steps.txt")
    cut = next(i for i, line in enumerate(lines) if line.startswith("step 00007/"))
    log = tmp_path / "log.txt"
    log.write_text("\n".join(lines[: cut + 1]) + "\n")
    assert runner.last_logged_step(log) == 8  # steps 0..7 done, none of them with an eta


def test_a_failed_download_reads_the_same_and_exits_0_in_both(tmp_path: Path) -> None:
    """Real nanochat.dataset without internet: shards it has are skipped, the rest fail, exit 0.
    The sim does the same under SPEEDQ_SIM_NO_NETWORK=1; the runner trusts neither exit code."""
    real_lines, real_code = recorded("dataset_cpu_offline.txt")
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(tmp_path), "SPEEDQ_SIM_STEP_S": "0.001", "SPEEDQ_SIM_FAULTS": ""}

    def sim(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nanochat.dataset", *argv], cwd=SIM_TREE, env={**env, **extra},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)

    sim("-n", "4")  # the recording's base dir held shards 0-3 and the val shard
    done = sim("-n", "5", "-w", "1", SPEEDQ_SIM_NO_NETWORK="1")

    def outline(lines: list[str]) -> dict[str, object]:
        names = lambda pattern: sorted(set(re.findall(pattern, "\n".join(lines))))  # noqa: E731
        return {"skipped": names(r"Skipping \S*/(shard_\d{5}\.parquet)"),
                "failed": names(r"Failed to download (shard_\d{5}\.parquet)"),
                "done": next(line.split(" shards to")[0] for line in lines if line.startswith("Done!"))}

    assert real_code == done.returncode == 0
    assert outline(done.stdout.splitlines()) == outline(real_lines)
    assert outline(real_lines)["failed"] == ["shard_00004.parquet"]
    assert data_files.missing_shards(tmp_path, 5) == [4]  # what the runner checks instead of the exit code


def test_a_runs_results_are_read_from_what_base_train_printed() -> None:
    """What RunResults takes from progress.json after a real run: the summary lines as printed,
    and the means of tok/sec and bf16_mfu over the steps base_train times (after index 10)."""
    lines, _ = recorded("base_train_cpu_20steps.txt")
    req = RunRequest(job_id="sq-1", attempt=1, model="d2", mode="full", nproc=1, gpu_type="CPU", commit="c",
                     repo="r", run_dir="/nonexistent", data_dir="/nonexistent", cache_dir="/nonexistent")
    attempt = runner.Attempt(req=req, log_path=Path("/nonexistent"))
    attempt.progress.stage = "base_train"
    for line in lines:
        attempt.parse(line)
    timed = [int(m[1].replace(",", "")) for line in lines
             if (m := re.search(r"^step 000(?:1[1-9]).*tok/sec: ([\d,]+)", line))]
    p = attempt.progress
    assert len(timed) == p.timed_steps == 9
    assert p.tokens_per_s == pytest.approx(sum(timed) / 9) and p.mfu_pct == 0.0  # a CPU has no bf16 peak
    assert (p.step, p.tokens, p.total_flops) == (20, 10240, 3.22152e10)
    assert (p.val_bpb, p.min_val_bpb, p.training_time_s) == (2.056008, 2.056008, 0.04 * 60)

    later = attempt.progress.model_copy()
    attempt.progress.stage = "chat_sft"  # prints a `Step N | Validation bpb` of its own
    attempt.parse("Step 00050 | Validation bpb: 0.4321")
    assert attempt.progress.val_bpb == later.val_bpb
