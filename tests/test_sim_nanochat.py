"""The simulated nanochat on its own: real subprocesses from the shipped tree, as the runner runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from speedq.sim import SIM_TREE
from speedq.sim import repo as sim_repo
from tests.conftest import wait_for

# scripts/base_train.py's print at 92d63d4; `| eta:` only after step 10.
PROGRESS_LINE = re.compile(
    r"^step (?P<step>\d{5})/\d{5} \(\d+\.\d{2}%\) \| loss: \d+\.\d{6} \| lrm: \d\.\d{2} \| dt: [\d.]+ms \| "
    r"tok/sec: [\d,]+ \| bf16_mfu: [\d.]+ \| epoch: \d+ pq: \d+ rg: \d+ \| "
    r"total time: [\d.]+m(?P<eta> \| eta: [\d.]+m)?$"
)


def sim(base: Path, *args: str, faults: str = "", world: int = 1, new_session: bool = False,
        timeout: float = 30, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "WORLD_SIZE": str(world), "SPEEDQ_SIM_STEP_S": "0.001",
           "SPEEDQ_SIM_FAULTS": faults, "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=SIM_TREE, env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=new_session)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A base dir with shards and a tokenizer, ready for base_train."""
    assert sim(tmp_path, "nanochat.dataset", "-n", "3", "-w", "2").returncode == 0
    assert sim(tmp_path, "scripts.tok_train").returncode == 0
    return tmp_path


def steps_printed(out: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^step (\d{5})/", out, re.M)]


def test_dataset_writes_shards_and_the_val_shard_and_skips_existing(tmp_path: Path) -> None:
    from speedq.gpu import data_files

    first = sim(tmp_path, "nanochat.dataset", "-n", "3")
    assert first.returncode == 0 and "Downloaded: 4/4" in first.stdout
    names = sorted(p.name for p in (tmp_path / "base_data_climbmix").iterdir())
    assert names == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet", "shard_06542.parquet"]
    assert data_files.missing_shards(tmp_path, 3) == []  # readable parquet frames
    again = sim(tmp_path, "nanochat.dataset", "-n", "4")
    assert "Downloaded: 5/5" in again.stdout and again.stdout.count("Successfully downloaded") == 1


def test_dataset_exits_0_when_every_download_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the real one does: the exit code says nothing, the shards do."""
    monkeypatch.setenv("SPEEDQ_SIM_NO_NETWORK", "1")
    done = sim(tmp_path, "nanochat.dataset", "-n", "2")
    assert done.returncode == 0 and "Downloaded: 0/3" in done.stdout
    assert not any((tmp_path / "base_data_climbmix").glob("*.parquet"))


def test_whole_pipeline_files_and_lines(base: Path) -> None:
    assert sim(base, "scripts.tok_eval").returncode == 0
    assert (base / "tokenizer" / "tokenizer.pkl").exists() and (base / "tokenizer" / "token_bytes.pt").exists()
    train = sim(base, "scripts.base_train", "--", "--depth", "4", "--num-iterations=12", "--save-every=5",
                "--eval-every=5", "--fp8", "--run=dummy", world=2)
    assert train.returncode == 0, train.stderr
    lines = [PROGRESS_LINE.match(line) for line in train.stdout.splitlines() if line.startswith("step ")]
    assert len(lines) == 12 and all(lines), lines[:2]
    assert [int(m["step"]) for m in lines] == list(range(12))  # 0-based
    assert [int(m["step"]) for m in lines if m["eta"]] == [11]  # eta only after step 10
    assert lines[-1].string.startswith("step 00011/00012 (91.67%)")
    assert re.search(r"^Step 00005 \| Validation bpb: \d\.\d{6}$", train.stdout, re.M)
    ckpt = base / "base_checkpoints" / "d4"
    for step in (5, 10, 12):  # every --save-every steps and at the end
        assert zipfile.ZipFile(ckpt / f"model_{step:06d}.pt").testzip() is None
        for rank in (0, 1):
            assert zipfile.ZipFile(ckpt / f"optim_{step:06d}_rank{rank}.pt").testzip() is None
        meta = json.loads((ckpt / f"meta_{step:06d}.json").read_text())
        assert meta["step"] == step and meta["model_config"]["n_layer"] == 4
        assert {"loop_state", "dataloader_state_dict", "val_bpb"} <= set(meta)
    for stage in (("scripts.base_eval",), ("scripts.chat_sft",), ("scripts.chat_eval", "-i", "sft")):
        done = sim(base, *stage)
        assert done.returncode == 0, done.stderr
    assert any((base / "chatsft_checkpoints" / "d4").glob("model_*.pt"))


def test_step_count_and_batch_follow_nanochats_sizing(base: Path) -> None:
    """The sim counts GPT's modules; speedq's closed form must read the same batch and steps."""
    from speedq.gpu import nanochat

    out = sim(base, "scripts.base_train", "--depth=4", "--target-param-data-ratio=1", "--save-every=-1",
              "--eval-every=-1", "--device-batch-size=1").stdout
    total = int(re.search(r"^step \d{5}/(\d{5})", out, re.M).group(1))
    batch = int(re.search(r"^Auto-computed optimal batch size: ([\d,]+) tokens", out, re.M).group(1).replace(",", ""))
    size = nanochat.size_run(4, "full", "H100", 1, {"target-param-data-ratio": 1.0, "device-batch-size": 1})
    assert (batch, total) == (size.total_batch_size, size.num_iterations)


def test_batch_assertion_fails_like_nanochat(base: Path) -> None:
    done = sim(base, "scripts.base_train", "--depth=2", "--num-iterations=3", world=3)
    assert done.returncode == 1
    assert re.search(r"AssertionError: total_batch_size \(131072\) must be a multiple of 196608\.", done.stderr)
    assert steps_printed(done.stdout) == []


def test_resume_continues_from_the_step_and_refuses_an_incomplete_checkpoint(base: Path) -> None:
    sim(base, "scripts.base_train", "--depth=4", "--num-iterations=10", "--save-every=4", world=2)
    resumed = sim(base, "scripts.base_train", "--depth=4", "--num-iterations=10", "--resume-from-step", "8", world=2)
    assert resumed.returncode == 0 and steps_printed(resumed.stdout) == [8, 9]
    assert "Resuming optimization from step 8" in resumed.stdout
    (base / "base_checkpoints" / "d4" / "optim_000004_rank1.pt").unlink()
    refused = sim(base, "scripts.base_train", "--depth=4", "--num-iterations=10", "--resume-from-step=4", world=2)
    assert refused.returncode != 0
    assert "incomplete" in refused.stderr and "optim_000004_rank1.pt" in refused.stderr
    assert steps_printed(refused.stdout) == []


def test_crash_fires_once_per_base_dir(base: Path) -> None:
    args = ("scripts.base_train", "--depth=4", "--num-iterations=8", "--save-every=2")
    crashed = sim(base, *args, faults="crash@5")
    assert crashed.returncode == 1 and "simulated crash at step 5" in crashed.stderr
    assert steps_printed(crashed.stdout) == [0, 1, 2, 3, 4]
    again = sim(base, *args, "--resume-from-step=4", faults="crash@5")
    assert again.returncode == 0 and steps_printed(again.stdout) == [4, 5, 6, 7]
    assert (base / ".sim-faults-fired").read_text().split() == ["crash@5"]


def test_preempt_kills_the_whole_process_group(base: Path) -> None:
    done = sim(base, "scripts.base_train", "--depth=4", "--num-iterations=8", "--save-every=2",
               faults="preempt@6", new_session=True)
    assert done.returncode == -signal.SIGKILL
    assert steps_printed(done.stdout) == [0, 1, 2, 3, 4, 5]


def test_torn_leaves_a_half_written_checkpoint(base: Path) -> None:
    done = sim(base, "scripts.base_train", "--depth=4", "--num-iterations=8", "--save-every=2",
               faults="torn@6", world=2, new_session=True)
    assert done.returncode == -signal.SIGKILL
    ckpt = base / "base_checkpoints" / "d4"
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(ckpt / "model_000006.pt")
    assert not (ckpt / "optim_000006_rank1.pt").exists()
    assert zipfile.ZipFile(ckpt / "model_000004.pt").testzip() is None


def test_hang_stops_printing_and_never_exits(base: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "SPEEDQ_SIM_STEP_S": "0.001", "SPEEDQ_SIM_FAULTS": "hang@3"}
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "scripts.base_train", "--depth=4", "--num-iterations=8"],
                                cwd=SIM_TREE, env=env, stdout=sink, text=True, start_new_session=True)
    try:
        # Timed from its third step, not its start: a loaded machine takes seconds to start Python
        wait_for(lambda: 2 in steps_printed(out.read_text()), timeout=60, what="step 2")
        time.sleep(1.0)  # a hundred steps' time
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert steps_printed(out.read_text()) == [0, 1, 2]


@pytest.mark.parametrize("text", ["preempt", "explode@3", "crash@x", "crash@0"])
def test_bad_fault_text_is_a_clear_error(base: Path, text: str) -> None:
    done = sim(base, "scripts.base_train", "--depth=4", "--num-iterations=3", faults=text)
    assert done.returncode == 2 and "SPEEDQ_SIM_FAULTS" in done.stderr and "KIND@STEP" in done.stderr
    assert steps_printed(done.stdout) == []


def test_sim_repo_is_idempotent_and_recommits_a_changed_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def head(dest: Path) -> str:
        git = ["git", "-C", str(dest), "rev-parse", "master"]
        return subprocess.run(git, capture_output=True, text=True).stdout.strip()

    dest = sim_repo.ensure_sim_repo(tmp_path / "repo")
    first = head(dest)
    assert len(first) == 40 and (dest / "scripts" / "base_train.py").exists()
    assert head(sim_repo.ensure_sim_repo(dest)) == first  # nothing changed, nothing committed
    tree = tmp_path / "tree"
    import shutil

    shutil.copytree(SIM_TREE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "scripts" / "extra.py").write_text("print('new')\n")
    monkeypatch.setattr(sim_repo, "SIM_TREE", tree)
    second = head(sim_repo.ensure_sim_repo(dest))
    assert second != first
    listed = subprocess.run(["git", "-C", str(dest), "cat-file", "-t", first], capture_output=True, text=True)
    assert listed.stdout.strip() == "commit"  # the commit pinned earlier still resolves


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


SIM_TORCHRUN = ("speedq.sim.torchrun", "-m")


def test_new_session_training_outlives_its_starter_like_torchrun(base: Path) -> None:
    """The sim's torchrun: killing the launcher's whole process group leaves the training."""
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "SPEEDQ_SIM_STEP_S": "0.001", "SPEEDQ_SIM_FAULTS": "hang@3"}
    command = [sys.executable, "-m", *SIM_TORCHRUN, "scripts.base_train", "--depth=4", "--num-iterations=8"]
    proc = subprocess.Popen(command, cwd=SIM_TREE, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    training: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while not training and time.monotonic() < deadline:
            training = children(proc.pid)
            time.sleep(0.05)
        assert len(training) == 1 and os.getsid(training[0]) == training[0] != os.getsid(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)
        os.kill(training[0], 0)  # still alive: the fence has to come from somewhere else
    finally:
        for pid in training:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_new_session_run_exits_like_torchrun(base: Path) -> None:
    ok = sim(base, *SIM_TORCHRUN, "scripts.base_train", "--depth=4", "--num-iterations=3")
    assert ok.returncode == 0 and steps_printed(ok.stdout) == [0, 1, 2]
    failed = sim(base, *SIM_TORCHRUN, "scripts.base_train", "--depth=4", "--num-iterations=8", faults="crash@2")
    assert failed.returncode == 1 and "simulated crash at step 2" in failed.stderr
