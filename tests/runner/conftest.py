"""The runner against the simulated nanochat: real subprocesses, real git, temporary directories.

What the runner's tests share: the sim repository, a fast sim with no faults unless a test sets
them, a request for a run under the test's temporary directory, the runner started as the local
backend starts it, and readers of what a run leaves in its directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from speedq.gpu import layout, runner
from speedq.schemas import Progress, RunRequest, RunResult
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
