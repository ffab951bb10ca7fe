"""Runs that fail (preempted, a torn checkpoint, a crash, a hang, the runner's own fault) and the
next attempt, which resumes from the newest complete checkpoint and counts the steps run twice.

Faults that SIGKILL the process group (preempt, torn) only ever run through the CLI in a session
of its own, as the local backend starts it: in-process they would take pytest with them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from speedq.gpu import layout, proctree, runner
from speedq.schemas import Outcome
from tests.runner.conftest import SAVE_EVERY, cli, log_text, progress, request, result, steps_logged

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
