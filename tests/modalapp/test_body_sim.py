"""The app's container bodies run in-process with the simulated nanochat, a temporary directory
standing in for /vol: the run on local disk offloaded to the Volume, resume from the Volume after a
crash, the data marker, the claim that fences an older attempt or a second call of the same one,
and Volume commits or reloads that fail without ending the attempt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from speedq.gpu import layout
from speedq.gpu import modal_app as m
from speedq.schemas import Outcome
from tests.modalapp.conftest import Volume, prepared, run, sim_request


def test_smoke_body_works_locally_and_offloads_to_the_volume(vol: Path, sim: str) -> None:
    volume = Volume()
    req = prepared(sim_request(vol, sim))
    result = run(req, volume, vol)
    assert result["outcome"] == Outcome.succeeded.value, result
    run_dir = Path(req.run_dir)
    assert run_dir.is_relative_to(vol / "runs" / "alpha")
    for name in (layout.LOG, layout.PROGRESS, layout.result_name(1), layout.CLAIM, layout.announce_name(1)):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / layout.announce_name(1)).read_text())["call_id"] == "fc-test"
    assert json.loads((run_dir / layout.CLAIM).read_text())["attempt"] == 1
    ckpt = run_dir / layout.checkpoint_dir("d4", "smoke")
    assert any(ckpt.glob("model_*.pt")), "no checkpoint reached the Volume"
    progress = json.loads((run_dir / layout.PROGRESS).read_text())
    assert progress["stage"] == "done" and progress["commit_failures"] == 0 and progress["reload_failures"] == 0
    assert progress["offloaded_step"] is not None
    assert volume.commits >= 3  # announcement, claim, the last sync
    assert not list(vol.rglob("*.part"))  # every copy whole


def test_the_data_marker_names_the_commit_and_the_shard_count(vol: Path, sim: str) -> None:
    smoke = sim_request(vol, sim)
    assert m.prepare(smoke) is True  # pins the ref first
    pinned = m.pin_commit(smoke)
    marker = json.loads(m.prepared_marker(pinned).read_text())
    assert marker == {"commit": pinned.commit, "shards": m.shards_for(smoke)}
    assert m.prepare(pinned) is False  # covered
    full = m.pin_commit(sim_request(vol, sim, mode="full"))
    if m.shards_for(full) > m.shards_for(smoke):
        assert not m.data_ready(full)  # a full run after a smoke run needs more shards


def test_resume_after_a_crash_fetches_the_newest_checkpoint_from_the_volume(
    vol: Path, sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = Volume()
    monkeypatch.setenv("SPEEDQ_SIM_FAULTS", "crash@10")  # d4 saves every 7 of its 352 steps
    first = run(prepared(sim_request(vol, sim, mode="full")), volume, vol)
    assert first["outcome"] == Outcome.crashed.value
    assert "base_train" in first["error"]
    monkeypatch.delenv("SPEEDQ_SIM_FAULTS")
    second = run(sim_request(vol, sim, mode="full", attempt=2), volume, vol)  # another container, empty disk
    assert second["outcome"] == Outcome.succeeded.value, second
    assert 0 < second["resumed_from_step"] < 10  # the newest checkpoint before the crash at step 10


def test_a_newer_claim_on_the_volume_fences_the_attempt_before_it_runs(vol: Path, sim: str) -> None:
    volume = Volume()
    req = sim_request(vol, sim, attempt=2)
    run_dir = Path(req.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / layout.CLAIM).write_text(json.dumps({"attempt": 3}))
    result = run(req, volume, vol)
    assert result["outcome"] in ("fenced", "cancelled") and "attempt 3" in result["error"]
    assert json.loads((run_dir / layout.CLAIM).read_text())["attempt"] == 3
    assert (run_dir / layout.announce_name(2)).exists()  # it did say who it was
    assert not (run_dir / layout.LOG).exists()  # and wrote nothing else


def test_force_restart_wipes_once_per_job(vol: Path, sim: str) -> None:
    volume = Volume()
    assert run(prepared(sim_request(vol, sim, mode="full", job_id="sq-1")), volume, vol)["outcome"] == "succeeded"
    again = run(sim_request(vol, sim, mode="full", job_id="sq-2", force_restart=True), volume, vol)
    assert again["outcome"] == "succeeded" and not again.get("resumed_from_step")
    assert (Path(sim_request(vol, sim, mode="full").run_dir) / layout.announce_name(1)).exists()
    # Modal restarting the same input: the same job id must not wipe the run a second time
    stray = Path(sim_request(vol, sim, mode="full").run_dir) / "kept.txt"
    stray.write_text("x")
    run(sim_request(vol, sim, mode="full", job_id="sq-2", force_restart=True), volume, vol)
    assert stray.exists()


def test_commit_and_reload_failures_are_counted_apart(vol: Path, sim: str) -> None:
    req = prepared(sim_request(vol, sim))
    result = run(req, Volume(fail_commit=True), vol)
    assert result["outcome"] == "succeeded"  # a failed commit never ends the attempt
    progress = json.loads((Path(req.run_dir) / layout.PROGRESS).read_text())
    assert progress["commit_failures"] >= 1 and progress["reload_failures"] == 0
    assert "commit refused" in progress["last_commit_error"]
    run(sim_request(vol, sim, attempt=2), Volume(fail_reload=True), vol)
    progress = json.loads((Path(req.run_dir) / layout.PROGRESS).read_text())
    assert progress["reload_failures"] >= 1 and progress["commit_failures"] == 0
    assert "open files" in progress["last_reload_error"]


def test_a_second_call_of_the_same_attempt_takes_over_and_the_first_stops(
    vol: Path, sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client retried a spawn whose answer was lost and two calls of attempt 1 exist: the
    latest claim wins; the other container copies nothing more and kills its stages."""
    import threading

    # ~50 s of training: long enough that a loaded machine still sees a checkpoint on the Volume
    # well before the end (the takeover comes at the first one)
    monkeypatch.setenv("SPEEDQ_SIM_STEP_S", "0.15")
    req = prepared(sim_request(vol, sim, mode="full"))
    run_dir = Path(req.run_dir)
    ckpt = run_dir / layout.checkpoint_dir("d4", "full")
    box: dict = {}
    body = threading.Thread(target=lambda: box.update(run(req, Volume(), vol, call_id="fc-first")))
    body.start()
    from speedq.gpu import offload

    deadline = time.monotonic() + 60
    while not (ckpt.is_dir() and offload.complete_steps(ckpt, req.nproc)):
        assert time.monotonic() < deadline and body.is_alive(), "no checkpoint reached the Volume"
        time.sleep(0.05)
    m.claim(run_dir, 1, "fc-second")  # the other container of attempt 1 starts
    taken_over_at = max(offload.complete_steps(ckpt, req.nproc))
    body.join(60)
    assert not body.is_alive()
    assert box["outcome"] in ("fenced", "cancelled") and "another call" in box["error"], box
    assert offload.claim_holder(run_dir) == (1, "fc-second")
    assert not (run_dir / layout.result_name(1)).exists()  # its end never reached the Volume
    # a sync already past its claim check may still land what it was copying, but the run stopped
    # long before its end
    from speedq.gpu import runner

    assert taken_over_at <= max(offload.complete_steps(ckpt, req.nproc)) < runner.sizing(req).num_iterations
