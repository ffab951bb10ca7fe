"""The runner against the simulated nanochat: real subprocesses, real git, temporary directories.

Faults that SIGKILL the process group (preempt, torn) only ever run through the CLI in a session
of its own, as the local backend starts it: in-process they would take pytest with them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from speedq.gpu import layout, proctree, runner
from speedq.schemas import Outcome, Progress, RunRequest, RunResult
from speedq.sim.repo import ensure_sim_repo

SAVE_EVERY = 5


@pytest.fixture(scope="module")
def sim_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_sim_repo(tmp_path_factory.mktemp("sim") / "nanochat")


@pytest.fixture(autouse=True)
def quick_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_SIM_STEP_S", "0.001")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("SPEEDQ_SIM_FAULTS", raising=False)


def request(tmp_path: Path, sim_repo: Path, *, mode: str = "full", model: str = "d4", job_id: str = "sq-1",
            attempt: int = 1, **extra) -> RunRequest:
    commit = runner.resolve_commit(str(sim_repo), "master")
    return RunRequest(
        job_id=job_id, attempt=attempt, model=model, mode=mode, nproc=2, gpu_type="H100", commit=commit,
        repo=str(sim_repo), run_dir=str(tmp_path / "runs" / "alpha" / model), data_dir=str(tmp_path / "data"),
        cache_dir=str(tmp_path / "cache"), launcher="sim", **extra,
    )


def cli(req: RunRequest, faults: str = "") -> subprocess.CompletedProcess[str]:
    """The runner as the local backend starts it: detached, in a session of its own."""
    env = {**os.environ, "SPEEDQ_SIM_FAULTS": faults}
    return subprocess.run(
        [sys.executable, "-m", "speedq.gpu.runner", "--request-json", req.model_dump_json()],
        env=env, capture_output=True, text=True, timeout=60, start_new_session=True,
    )


def progress(req: RunRequest) -> Progress:
    return Progress.model_validate_json((Path(req.run_dir) / layout.PROGRESS).read_text())


def result(req: RunRequest) -> RunResult:
    return RunResult.model_validate_json((Path(req.run_dir) / layout.result_name(req.attempt)).read_text())


def log_text(req: RunRequest) -> str:
    return (Path(req.run_dir) / layout.LOG).read_text()


def steps_logged(text: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^step (\d{5})/", text, re.M)]


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


# -- faults and resume ------------------------------------------------------------------------


def test_preempt_then_the_next_attempt_resumes_from_the_newest_checkpoint(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    killed = cli(req, faults="preempt@23")
    assert killed.returncode == -signal.SIGKILL  # the runner died with its training, as in a lost container
    assert not (Path(req.run_dir) / layout.result_name(1)).exists()
    ckpt_dir = Path(req.run_dir) / layout.checkpoint_dir("d4")
    assert runner.newest_complete_checkpoint(ckpt_dir, 2) == 20
    assert steps_logged(log_text(req))[-1] == 22
    seen = progress(req)  # what the worker reads once the runner is gone
    assert seen.stage == "base_train" and seen.checkpoint_step == 20 and 20 < seen.step <= 23  # steps done

    second = request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY)
    done = cli(second, faults="preempt@23")  # fired already in this run dir: passes now
    assert done.returncode == 0, done.stdout
    res = result(second)
    assert res.outcome is Outcome.succeeded and res.resumed_from_step == 20
    log = log_text(second)
    resumed_part = log.split("==== speedq attempt 2")[1]
    assert "--resume-from-step=20" in resumed_part
    assert steps_logged(resumed_part)[0] == 20  # nanochat prints the resume step first
    assert progress(second).resumed_from_step == 20


def test_torn_checkpoint_falls_back_to_the_one_before(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    assert cli(req, faults="torn@25").returncode == -signal.SIGKILL
    ckpt_dir = Path(req.run_dir) / layout.checkpoint_dir("d4")
    assert (ckpt_dir / "model_000025.pt").exists()  # there, but cut short
    second = request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY)
    assert cli(second).returncode == 0
    assert result(second).resumed_from_step == 20
    assert "--resume-from-step=20" in log_text(second)


def test_crash_is_reported_with_the_stage_then_resumed(tmp_path: Path, sim_repo: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_SIM_FAULTS", "crash@12")
    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    res = runner.run(req)
    assert res.outcome is Outcome.crashed and res.exit_code == 1
    assert "base_train" in res.error and "simulated crash at step 12" in res.error and "\n" not in res.error
    assert result(req) == res
    assert progress(req).checkpoint_step == 10 and progress(req).stage == "base_train"

    again = runner.run(request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY))
    assert again.outcome is Outcome.succeeded and again.resumed_from_step == 10


def test_bad_fault_text_fails_the_first_stage_clearly(tmp_path: Path, sim_repo: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_SIM_FAULTS", "boom@3")
    res = runner.run(request(tmp_path, sim_repo, mode="smoke"))
    assert res.outcome is Outcome.crashed and "stage data" in res.error and "SPEEDQ_SIM_FAULTS" in res.error


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


# -- checkpoints ------------------------------------------------------------------------------


def write_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{path.stem}/data.pkl", b"x" * 100)


def write_checkpoint(ckpt: Path, step: int, ranks: int = 2) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    write_zip(ckpt / f"model_{step:06d}.pt")
    (ckpt / f"meta_{step:06d}.json").write_text(json.dumps({"step": step}))
    for rank in range(ranks):
        write_zip(ckpt / f"optim_{step:06d}_rank{rank}.pt")


def test_newest_complete_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "base_checkpoints" / "d4"
    assert runner.newest_complete_checkpoint(ckpt, 2) is None
    for step in (5, 10, 15, 20):
        write_checkpoint(ckpt, step)
    assert runner.newest_complete_checkpoint(ckpt, 2) == 20
    assert runner.newest_complete_checkpoint(ckpt, 4) is None  # no step has 4 ranks' optimizer files

    (ckpt / "optim_000020_rank1.pt").unlink()  # a rank's file missing
    assert runner.newest_complete_checkpoint(ckpt, 2) == 15
    assert runner.newest_complete_checkpoint(ckpt, 1) == 20

    data = (ckpt / "model_000015.pt").read_bytes()  # a zip cut short
    (ckpt / "model_000015.pt").write_bytes(data[: len(data) // 2])
    assert runner.newest_complete_checkpoint(ckpt, 2) == 10

    (ckpt / "meta_000010.json").write_text('{"step": 1')  # meta that does not parse
    assert runner.newest_complete_checkpoint(ckpt, 2) == 5


def test_step_count_and_default_interval_follow_nanochats_sizing(tmp_path: Path, sim_repo: Path) -> None:
    smoke = request(tmp_path, sim_repo, mode="smoke", model="d12")
    assert runner.sizing(smoke).num_iterations == 10 and runner.save_every_for(smoke) == 5
    full = request(tmp_path, sim_repo, model="d32").model_copy(update={"nproc": 8})
    assert runner.sizing(full).num_iterations == 6400  # nanochat's d32 at ratio 8: batch 2,097,152
    assert runner.save_every_for(full) == 128  # 2% of the run
    assert "--target-param-data-ratio=8" in runner.plan(full)[3].flags
    assert "--device-batch-size=16" in runner.plan(full)[3].flags


# -- git --------------------------------------------------------------------------------------


def test_resolve_commit(sim_repo: Path) -> None:
    git = ["git", "-C", str(sim_repo), "rev-parse", "master"]
    head = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    assert runner.resolve_commit(str(sim_repo), "master") == head
    assert runner.resolve_commit(str(sim_repo), head) == head
    assert runner.resolve_commit(f"file://{sim_repo}", "master") == head  # the ls-remote path
    for bad in ("no-such-branch", "--upload-pack=touch /tmp/x"):
        with pytest.raises(ValueError):
            runner.resolve_commit(str(sim_repo), bad)
    with pytest.raises((ValueError, RuntimeError)):
        runner.resolve_commit(f"file://{sim_repo}", "no-such-branch")


def test_a_hung_run_leaves_progress_untouched(tmp_path: Path, sim_repo: Path) -> None:
    """updated_at only moves when the run does, so a stall detector can see a hang."""
    import time

    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    env = {**os.environ, "SPEEDQ_SIM_FAULTS": "hang@8"}
    proc = subprocess.Popen([sys.executable, "-m", "speedq.gpu.runner", "--request-json", req.model_dump_json()],
                            env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        path = Path(req.run_dir) / layout.PROGRESS
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (path.exists() and progress(req).step == 8):
            time.sleep(0.05)
        time.sleep(0.5)
        before = path.read_text()
        time.sleep(1.0)
        assert path.read_text() == before and progress(req).step == 8  # steps 0..7 done
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proctree.end_marked(req.run_dir) == []  # the training has a session of its own
    assert not (Path(req.run_dir) / layout.result_name(1)).exists()


def test_a_runner_fault_is_a_crashed_result_not_silence(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, mode="smoke").model_copy(update={"commit": "f" * 40})
    res = runner.run(req)  # the commit does not exist: the checkout fails
    assert res.outcome is Outcome.crashed and "checkout" in res.error
    assert result(req).outcome is Outcome.crashed
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / layout.DATA_LEDGER).mkdir()  # unreadable ledger location: an OSError inside
    res = runner.run(request(tmp_path, sim_repo, mode="smoke", attempt=2))
    assert res.outcome is Outcome.crashed and res.error.startswith("runner error:")


def test_a_crash_after_base_train_resumes_without_training_again(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    sft = Path(req.run_dir) / "chatsft_checkpoints"
    sft.parent.mkdir(parents=True, exist_ok=True)
    sft.write_text("in the way")  # chat_sft cannot write its checkpoints: it fails
    first = runner.run(req)
    assert first.outcome is Outcome.crashed and "chat_sft" in first.error
    sft.unlink()
    total = runner.sizing(req).num_iterations
    second = runner.run(request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY))
    assert second.outcome is Outcome.succeeded and second.resumed_from_step == second.final_step == total
    prog = progress(req)
    assert (prog.stage, prog.step, prog.total) == ("done", total, total)
    assert steps_logged(log_text(req)) == list(range(total))


def test_commands_per_launcher(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo).model_copy(update={"launcher": "torchrun", "gpu_type": "A100-80GB"})
    stages = {s.name: s for s in runner.plan(req)}
    assert list(stages) == ["data", "tok_train", "tok_eval", "base_train", "base_eval", "chat_sft", "chat_eval"]
    train = runner.command(req, stages["base_train"], ["--save-every=7"])
    at = train.index("--standalone")  # after `torchrun`, or `python -m torch.distributed.run` without it
    expected = ["--standalone", "--nproc_per_node=2", "-m", runner.RANK_MODULE, "scripts.base_train", "--"]
    assert train[at : at + 6] == expected
    assert "--depth=4" in train and "--save-every=7" in train and "--fp8" not in train  # no fp8 on an A100
    assert runner.command(req, stages["data"], [])[:3] == [sys.executable, "-m", "nanochat.dataset"]
    assert runner.command(req, stages["chat_eval"], [])[-2:] == ["-i", "sft"]
    py = req.model_copy(update={"launcher": "python", "gpu_type": "H100", "env": {"WANDB_RUN": "mine"}})
    expected = [sys.executable, "-m", runner.RANK_MODULE, "scripts.base_train"]
    assert runner.command(py, runner.plan(py)[3], [])[:4] == expected
    assert "--fp8" in runner.plan(py)[3].flags and "--run=mine" in runner.plan(py)[3].flags
    assert "WORLD_SIZE" not in runner.stage_env(py, tmp_path)
    sim_env = runner.stage_env(request(tmp_path, sim_repo), tmp_path)
    assert sim_env["WORLD_SIZE"] == "2" and sim_env["NANOCHAT_BASE_DIR"] == str(tmp_path)
    assert sim_env["WANDB_RUN"] == "dummy" and sim_env["PYTHONUNBUFFERED"] == "1"
    smoke = {s.name for s in runner.plan(request(tmp_path, sim_repo, mode="smoke"))}
    assert smoke == {"data", "tok_train", "tok_eval", "base_train"}


# -- data readiness and offline runs ----------------------------------------------------------


def test_data_is_not_ready_because_the_download_exited_0(tmp_path: Path, sim_repo: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_SIM_NO_NETWORK", "1")  # every download fails; nanochat.dataset exits 0
    res = runner.run(request(tmp_path, sim_repo, mode="smoke"))
    assert res.outcome is Outcome.crashed and res.exit_code == 0
    assert res.error.startswith("stage data: exited 0 but 9 of 9 shards missing or unreadable")
    assert "data" not in runner.read_ledger(tmp_path / "data" / layout.DATA_LEDGER)
    monkeypatch.delenv("SPEEDQ_SIM_NO_NETWORK")
    again = request(tmp_path, sim_repo, mode="smoke", attempt=2)
    assert runner.run(again).outcome is Outcome.succeeded
    entry = runner.read_ledger(tmp_path / "data" / layout.DATA_LEDGER)["data"]
    assert entry.commit == again.commit and entry.shards == runner.shards_needed(again) == 8
    # A shard cut short later makes the data not ready again, whatever the ledger says.
    shard = tmp_path / "data" / "base_data_climbmix" / "shard_00003.parquet"
    shard.write_bytes(shard.read_bytes()[:-3])
    assert not runner.shared_stage_done(again, runner.plan(again)[0])


def test_an_offline_run_skips_the_stages_that_need_the_internet(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, model="d2", offline=True, save_every=SAVE_EVERY)
    env = {**os.environ, "NANOCHAT_BASE_DIR": req.data_dir}  # shards and tokenizer written ahead, as the CPU tier does
    for argv in (["nanochat.dataset", "-n", str(runner.shards_needed(req))], ["scripts.tok_train"]):
        subprocess.run([sys.executable, "-m", *argv], cwd=sim_repo, env=env, check=True, capture_output=True)
    res = runner.run(req)
    assert res.outcome is Outcome.succeeded, res.error
    log = log_text(req)
    for stage in ("tok_eval", "base_eval", "chat_sft", "chat_eval"):
        assert f"---- stage {stage}: skipped, offline run (it downloads" in log
        assert f"scripts.{stage}" not in log  # never launched, directly or through the rank wrapper
    assert "stage data: already done in" in log and "speedq.gpu.rank scripts.base_train" in log


def test_an_offline_run_without_the_shards_says_so(tmp_path: Path, sim_repo: Path) -> None:
    res = runner.run(request(tmp_path, sim_repo, mode="smoke", offline=True))
    assert res.outcome is Outcome.crashed
    assert res.error.startswith("stage data: offline run, and 9 of 9 shards missing") and "internet" in res.error


def test_the_local_backend_marks_runs_offline_from_the_environment(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from speedq.backends.local import LocalBackend
    from speedq.schemas import JobRecord, JobSpec

    record = JobRecord(id="sq-1", spec=JobSpec(team="t", backend="local", gpu="CPU:1",
                                               train_args={"max-seq-len": 128}))
    backend = LocalBackend(repo=str(tmp_path), runs_root=tmp_path, data_root=tmp_path, cache_root=tmp_path)
    assert backend.request(record, 1).offline is False
    monkeypatch.setenv("SPEEDQ_OFFLINE", "1")
    req = backend.request(record, 1)
    assert req.offline is True and req.train_args == {"max-seq-len": 128} and req.gpu_type == "CPU"


def test_the_tokenizers_vocabulary_sizes_the_batch_as_in_nanochat(tmp_path: Path, sim_repo: Path) -> None:
    """A tokenizer trained with a small vocabulary shrinks nanochat's auto batch (d2 at head-dim 64:
    65,536 tokens with 455 tokens, as recorded from the real run, against 131,072 with 32,768);
    the device batch the runner passes must divide the batch nanochat will really compute."""
    req = request(tmp_path, sim_repo, model="d2", mode="smoke").model_copy(
        update={"nproc": 4, "train_args": {"head-dim": 64}})
    assert (runner.sizing(req).total_batch_size, runner.sizing(req).device_batch_size) == (131072, 16)
    env = {**os.environ, "NANOCHAT_BASE_DIR": req.data_dir}
    for argv in (["nanochat.dataset", "-n", "8"], ["scripts.tok_train", "--vocab-size=455"]):
        subprocess.run([sys.executable, "-m", *argv], cwd=sim_repo, env=env, check=True, capture_output=True)
    assert (runner.sizing(req).total_batch_size, runner.sizing(req).device_batch_size) == (65536, 8)
    assert runner.shards_needed(req) == 8
    res = runner.run(req)  # the sim asserts nanochat's batch rule over its 4 ranks
    assert res.outcome is Outcome.succeeded, res.error
    log = log_text(req)
    assert "Auto-computed optimal batch size: 65,536 tokens" in log and "--device-batch-size=8" in log


def test_a_fault_before_step_10_is_seen_and_counted(tmp_path: Path, sim_repo: Path) -> None:
    """Before step 11 nanochat prints no eta; the runner must still read those lines, so the next
    attempt knows how far the killed one got and the job counts the steps run twice."""
    from speedq.schemas import Attempt, JobRecord, JobSpec

    req = request(tmp_path, sim_repo, save_every=SAVE_EVERY)
    assert cli(req, faults="preempt@7").returncode == -signal.SIGKILL
    assert steps_logged(log_text(req))[-1] == 6 and runner.last_logged_step(Path(req.run_dir) / layout.LOG) == 7
    second = request(tmp_path, sim_repo, attempt=2, save_every=SAVE_EVERY)
    assert cli(second).returncode == 0
    prog, res = progress(second), result(second)
    assert (res.resumed_from_step, prog.reached_before_resume) == (5, 7)
    record = JobRecord(id="sq-1", spec=JobSpec(team="alpha", model="d4", backend="sim"), attempts=[
        Attempt(number=1, backend="sim", final_step=prog.reached_before_resume),
        Attempt(number=2, backend="sim", resumed_from_step=res.resumed_from_step, final_step=res.final_step),
    ])
    assert record.steps_recomputed == 2  # steps 5 and 6, run before the preemption and again after it
