"""The run-directory fence on its own: announcement, claim, and a superseded runner stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speedq.gpu import fence, layout, proctree, runner
from speedq.schemas import Outcome, RunRequest
from speedq.sim.repo import ensure_sim_repo
from tests.conftest import wait_for
from tests.real.conftest import nanochat_source


@pytest.fixture(scope="module")
def sim_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_sim_repo(tmp_path_factory.mktemp("sim") / "nanochat")


def request(tmp_path: Path, sim_repo: Path, attempt: int = 1) -> RunRequest:
    return RunRequest(
        job_id="sq-1", attempt=attempt, model="d4", mode="full", nproc=2, gpu_type="H100",
        commit=runner.resolve_commit(str(sim_repo), "master"), repo=str(sim_repo),
        run_dir=str(tmp_path / "runs" / "alpha" / "d4"), data_dir=str(tmp_path / "data"),
        cache_dir=str(tmp_path / "cache"), launcher="sim", save_every=5,
    )


def test_a_claim_refuses_an_older_attempt(tmp_path: Path) -> None:
    fence.claim(tmp_path, 2, "call-2")
    with pytest.raises(fence.Fenced):
        fence.claim(tmp_path, 1, "call-1")
    with pytest.raises(fence.Fenced):
        fence.check(tmp_path, 1)
    fence.check(tmp_path, 2)
    fence.claim(tmp_path, 3)
    assert fence.read_claim(tmp_path).attempt == 3


def test_the_runner_announces_itself_and_a_superseded_one_returns_fenced(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, attempt=1)
    fence.claim(req.run_dir, 2)
    res = runner.run(req, call_id="fc-1")
    assert res.outcome is Outcome.fenced and not res.outcome.retryable
    note = fence.read_announcement(req.run_dir, 1)
    assert (note.attempt, note.call_id, note.pid) == (1, "fc-1", os.getpid())
    assert not (Path(req.run_dir) / layout.LOG).exists()  # it wrote nothing else
    assert not (Path(req.run_dir) / layout.result_name(1)).exists()


def test_a_claim_mid_training_stops_the_older_runner_without_writing(tmp_path: Path, sim_repo: Path) -> None:
    req = request(tmp_path, sim_repo, attempt=1)
    env = {**os.environ, "SPEEDQ_SIM_STEP_S": "0.05"}
    proc = subprocess.Popen([sys.executable, "-m", "speedq.gpu.runner", "--request-json", req.model_dump_json()],
                            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ckpt = Path(req.run_dir) / layout.checkpoint_dir("d4")
        wait_for(lambda: list(ckpt.glob("model_*.pt")), timeout=60, what="a first checkpoint")
        note = fence.read_announcement(req.run_dir, 1)
        assert note.call_id.startswith(f"{proc.pid}@") and note.pid == proc.pid
        fence.claim(req.run_dir, 2)
        claimed_at = time.time()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "fenced" in out
    assert proctree.marked(req.run_dir) == []  # its training stopped too
    late = [p for p in ckpt.iterdir() if p.stat().st_mtime > claimed_at + fence.RANK_CHECK_EVERY_S + 0.5]
    assert late == []  # nothing saved after the claim (give or take the rank's check interval)
    assert not (Path(req.run_dir) / layout.result_name(1)).exists()
    assert json.loads((Path(req.run_dir) / layout.CLAIM).read_text())["attempt"] == 2


def lock_held(run_dir: Path) -> bool:
    """Whether a training process holds the run dir: taking the lock gives up at once."""
    try:
        fence.take_training_lock(run_dir, wait_s=0)
    except TimeoutError:
        return True
    return False


def test_a_new_attempt_cannot_train_beside_an_older_training(tmp_path: Path) -> None:
    """An older attempt's training process (its runner gone) holds the run dir's training lock;
    the newer attempt gets it only after claiming, when the older one sees the claim and stops."""
    run_dir = tmp_path / "run"
    fence.claim(run_dir, 1)
    env = {**os.environ, proctree.MARK_ENV: str(run_dir), proctree.ATTEMPT_ENV: "1"}
    command = [sys.executable, "-m", "speedq.gpu.rank", "timeit", "-n", "1", "import time; time.sleep(60)"]
    old = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        wait_for(lambda: lock_held(run_dir), timeout=30, what="the older training to take the lock")
        fence.claim(run_dir, 2)
        fence.take_training_lock(run_dir, wait_s=10)
        assert old.wait(timeout=5) == fence.FENCED_EXIT
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


@pytest.mark.real
def test_the_real_nanochats_checkpoint_save_is_fenced(tmp_path: Path) -> None:
    """speedq.gpu.rank guards the real checkpoint_manager.save_checkpoint that base_train imports."""
    pytest.importorskip("torch", reason="the real nanochat needs torch (pip install torch==2.13.0)")
    repo, why = nanochat_source()  # the tier's lookup: the bundle beside the repo (as CI lays it) first
    if repo is None:
        pytest.skip(why)
    tree = tmp_path / "nanochat"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(tree)], check=True, timeout=120)
    run_dir = tmp_path / "run"
    fence.claim(run_dir, 1)
    probe = (
        "from speedq.gpu import fence, rank\n"
        f"rank._guard_saves({str(run_dir)!r}, 1)\n"
        "from nanochat.checkpoint_manager import save_checkpoint\n"  # as scripts/base_train.py does
        f"fence.claim({str(run_dir)!r}, 2)\n"
        f"save_checkpoint({str(run_dir / 'ckpt')!r}, 1, {{}}, {{}}, {{}})\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True, timeout=180)
    assert done.returncode == fence.FENCED_EXIT, done.stderr[-2000:]
    assert "attempt 2 claimed the run directory" in done.stderr
    assert not (run_dir / "ckpt").exists()


def test_a_checkpoint_callback_is_never_run_for_a_superseded_attempt(tmp_path: Path, sim_repo: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, as the Modal app runs it: once a newer attempt claims the run dir, the next
    checkpoint's Volume commit does not happen, the stage ends and the attempt returns fenced."""
    monkeypatch.setenv("SPEEDQ_SIM_STEP_S", "0.05")
    req = request(tmp_path, sim_repo, attempt=1)
    commits: list[int] = []

    def commit_volume() -> None:
        commits.append(1)
        if len(commits) == 2:  # the first checkpoint of base_train is committed, then attempt 2 claims
            fence.claim(req.run_dir, 2)

    res = runner.run(req, on_checkpoint=commit_volume, call_id="fc-1")
    assert res.outcome is Outcome.fenced
    assert len(commits) == 2  # nothing committed after the claim
    assert proctree.marked(req.run_dir) == []
