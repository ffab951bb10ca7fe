"""What the runner works out before and around its stages: the commit a ref names, each stage's
command per launcher, step counts and batch sizes as nanochat computes them, and the newest
checkpoint a resume can use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from speedq.gpu import runner
from speedq.schemas import Outcome
from tests.runner.conftest import log_text, request

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


# -- commands and batch sizes -----------------------------------------------------------------


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
