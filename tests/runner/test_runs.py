"""Whole runs of the simulated nanochat through every stage: in-process and through the CLI, the
ledger that skips what is done, the shared data prepared once, and a forced restart that wipes the
run directory once per job.
"""

from __future__ import annotations

from pathlib import Path

from speedq.gpu import layout, runner
from speedq.schemas import Outcome
from tests.runner.conftest import SAVE_EVERY, cli, log_text, progress, request, result, steps_logged

# -- whole runs -------------------------------------------------------------------------------


def test_smoke_run_in_process(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, mode="smoke", model="d12")
    calls: list[int] = []
    res = runner.run(req, on_checkpoint=lambda: calls.append(1))

    assert res.outcome is Outcome.succeeded and res.exit_code == 0 and res.final_step == 10
    assert result(req) == res
    prog = progress(req)
    assert (prog.stage, prog.step, prog.total, prog.checkpoint_step) == ("done", 10, 10, 10)
    assert prog.loss is not None and prog.loss > 0
    log = log_text(req)
    assert log.startswith("==== speedq attempt 1 of sq-1")
    assert "step 00009/00010" in log and "--num-iterations=10" in log and "--eval-every=-1" in log
    assert "scripts.base_eval" not in log  # smoke: evals off
    assert (Path(req.run_dir) / "base_checkpoints" / "d12-smoke" / "model_000010.pt").exists()
    assert calls  # Modal would have committed the Volume
    # The shared data lives in the data dir; the run dir links to it.
    assert (Path(req.run_dir) / "tokenizer").resolve() == Path(req.data_dir) / "tokenizer"


def test_full_run_through_the_cli_then_the_ledger_skips_everything(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    done = cli(req)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (Path(req.run_dir) / layout.PID).read_text().strip().isdigit()
    res = result(req)
    total = runner.sizing(req).num_iterations  # nanochat's own step count (auto batch from the model)
    assert res.outcome is Outcome.succeeded and res.final_step == total and res.resumed_from_step is None
    prog = progress(req)
    assert (prog.step, prog.total, prog.checkpoint_step) == (total, total, total)
    assert prog.val_bpb is not None and prog.min_val_bpb is not None and prog.core_metric is not None
    assert prog.training_time_s is not None  # base_train's `Total training time`, the speedrun metric
    log = log_text(req)
    for module in ("nanochat.dataset", "scripts.tok_train", "scripts.tok_eval", "scripts.base_train",
                   "scripts.base_eval", "scripts.chat_sft", "scripts.chat_eval"):
        assert f" {module} " in log  # `-m module`, or `-m speedq.gpu.rank module` for training
    assert f"--save-every={SAVE_EVERY}" in log and "--fp8" in log and "--depth=4" in log
    assert "Validation bpb" in log
    ckpts = sorted((Path(req.run_dir) / "base_checkpoints" / "d4").glob("model_*.pt"))
    assert len(ckpts) == runner.KEEP_CHECKPOINTS  # older complete checkpoints were pruned

    again = request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY)
    assert runner.run(again).outcome is Outcome.succeeded
    log = log_text(again)
    assert log.count("==== speedq attempt") == 2
    assert steps_logged(log) == list(range(total))  # training ran once, 0-based
    assert log.count("(ledger), skipped") == 7
    assert result(again).final_step == total


def test_shared_data_is_prepared_once_for_every_run(tmp_path: Path, sim_repo: Path) -> None:
    first = request(tmp_path, sim_repo, mode="smoke")
    runner.prepare_data(first)
    assert "scripts.tok_train" in (Path(first.data_dir) / layout.DATA_LOG).read_text()
    assert runner.run(first).outcome is Outcome.succeeded
    log = log_text(first)
    assert "stage tok_train: already done in" in log and "-m scripts.tok_train" not in log

def test_force_restart_wipes_once_per_job(tmp_path: Path, sim_repo: Path) -> None:
    first = request(tmp_path, sim_repo, mode="smoke")
    assert runner.run(first).outcome is Outcome.succeeded
    stray = Path(first.run_dir) / "stray.txt"
    stray.write_text("x")

    forced = request(tmp_path, sim_repo, mode="smoke", job_id="sq-2", force_restart=True)
    res = runner.run(forced)
    assert res.outcome is Outcome.succeeded and res.resumed_from_step is None
    assert not stray.exists() and log_text(forced).count("==== speedq attempt") == 1
    assert (Path(forced.run_dir) / layout.FORCE_MARKER).read_text().strip() == "sq-2"
    assert (Path(forced.data_dir) / "tokenizer").exists()  # the shared data was not followed into

    stray.write_text("x")  # Modal restarting the same input: same job id, no second wipe
    restarted = request(tmp_path, sim_repo, mode="smoke", job_id="sq-2", attempt=2, force_restart=True)
    assert runner.run(restarted).outcome is Outcome.succeeded
    assert stray.exists() and log_text(restarted).count("==== speedq attempt") == 2
