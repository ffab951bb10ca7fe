"""The container body's order of things, against a stand-in runner (so it runs whether or not the
runner exists): announce first, pin the ref, run on local disk, check the prepared data, and commit
the Volume even when the runner raises.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from speedq.gpu import layout
from speedq.gpu import modal_app as m
from speedq.schemas import Outcome, RunRequest
from tests.modalapp.conftest import Volume, run


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch):
    import sys
    import types

    import speedq.gpu
    from speedq.gpu import nanochat
    from speedq.gpu import runner as real
    from speedq.schemas import RunResult

    calls: list[tuple] = []

    def prepare_data(req: RunRequest) -> None:  # the files nanochat's data and tokenizer stages leave
        calls.append(("prepare_data", req.commit, req.data_dir))
        data = Path(req.data_dir)
        (data / nanochat.TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
        (data / nanochat.SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        for name in nanochat.TOKENIZER_FILES:
            (data / nanochat.TOKENIZER_DIR / name).write_bytes(b"t")
        for i in [*range(m.shards_for(req)), nanochat.VAL_SHARD]:
            (data / nanochat.SHARDS_DIR / nanochat.shard_name(i)).write_bytes(b"s")

    def run(req: RunRequest, on_checkpoint=None, call_id=None) -> RunResult:
        announced = sorted(p.name for p in Path(fake.volume_run).glob("attempt-*.json"))
        calls.append(("run", req.commit, req.run_dir, req.data_dir, req.cache_dir, call_id, announced))
        for _ in range(2):
            on_checkpoint()
        if req.env.get("BOOM"):
            raise RuntimeError("boom")
        return RunResult(job_id=req.job_id, attempt=req.attempt, outcome=Outcome.succeeded, final_step=10)

    fake = types.SimpleNamespace(
        prepare_data=prepare_data, run=run, resolve_commit=lambda repo, ref: "c" * 40, calls=calls,
        volume_run="", **{name: getattr(real, name) for name in (
            "force_restart", "write_json_atomic", "shards_needed", "save_every_for", "checkpoint_steps",
            "checkpoint_files", "newest_complete_checkpoint", "prune_checkpoints", "_readable")},
    )
    monkeypatch.setitem(sys.modules, "speedq.gpu.runner", fake)
    monkeypatch.setattr(speedq.gpu, "runner", fake, raising=False)
    return fake


def test_body_announces_first_pins_runs_on_local_disk_and_commits(vol: Path, fake_runner) -> None:
    volume = Volume()
    req = m.request_for(mode="smoke", model="d12", repo_ref="master", force_restart=False, team="alpha",
                        run_name="", job_id="sq-1", root=str(vol))
    fake_runner.volume_run = req.run_dir
    m.prepare(m.pin_commit(req))  # the CPU function, before the spawn
    prepared_calls = list(fake_runner.calls)
    result = run(req, volume, vol, call_id="fc-42")
    assert result["outcome"] == "succeeded" and result["final_step"] == 10
    [(what, commit, run_dir, data_dir, cache_dir, call_id, announced)] = fake_runner.calls[len(prepared_calls):]
    assert (what, commit, call_id) == ("run", "c" * 40, "fc-42")  # the ref was pinned; the call id passed on
    assert announced == [layout.announce_name(1)]  # on the Volume before the runner started
    for path in (run_dir, data_dir, cache_dir):
        assert not Path(path).is_relative_to(vol), path  # cwd, log and checkpoints: local disk
    assert volume.commits >= 3


def test_data_marked_prepared_but_missing_on_the_volume_ends_the_attempt_clearly(vol: Path, fake_runner) -> None:
    req = m.request_for(mode="smoke", model="d12", repo_ref="a" * 40, force_restart=False, team="alpha",
                        run_name="", job_id="sq-1", root=str(vol))
    fake_runner.volume_run = req.run_dir
    m.prepare(req)
    (Path(req.data_dir) / "base_data_climbmix" / "shard_00003.parquet").unlink()
    result = run(req, Volume(), vol)
    assert result["outcome"] == "crashed" and "files are missing" in result["error"]
    assert [c[0] for c in fake_runner.calls] == ["prepare_data"]  # the runner never started


def test_body_commits_the_volume_even_when_the_runner_raises(vol: Path, fake_runner) -> None:
    volume = Volume()
    req = m.request_for(mode="full", model="d12", repo_ref="a" * 40, force_restart=False, team="alpha",
                        run_name="", job_id="sq-1", root=str(vol))
    fake_runner.volume_run = req.run_dir
    req = req.model_copy(update={"env": {"BOOM": "1"}})
    with pytest.raises(RuntimeError, match="boom"):
        run(req, volume, vol)
    assert volume.commits >= 3
    assert fake_runner.calls[-1][:2] == ("run", "a" * 40)  # a commit id is used as is
