"""The shared data: ready only when its shards are there and readable (not because the download
exited 0), and runs offline, which skip the stages that need the internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speedq.gpu import layout, runner
from speedq.schemas import Outcome
from tests.runner.conftest import SAVE_EVERY, log_text, request


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
