"""Train args and GPU type CPU through every way in: CLI, API and the runner's argv."""

from __future__ import annotations

from pathlib import Path

from speedq.gpu import nanochat, runner
from speedq.schemas import JobSpec, RunRequest, SubmitRequest
from tests.conftest import Speedq
from tests.test_api import api, bearer  # noqa: F401 - the API fixture


def test_train_args_are_typed_stored_and_shown(speedq: Speedq) -> None:
    job = speedq.submit("--team", "alpha", "--smoke", "--train-arg", "max-seq-len=512", "--train-arg", "fp8",
                        "--train-arg", "matrix-lr=0.03", "--train-arg", "window-pattern=L")
    record = speedq.status(job)
    assert record["spec"]["train_args"] == {"max-seq-len": 512, "fp8": True, "matrix-lr": 0.03, "window-pattern": "L"}
    shown = speedq.run("status", job, check=True).stdout
    assert "max-seq-len=512 fp8=True matrix-lr=0.03 window-pattern=L" in shown
    assert record["spec"]["repo_ref"] == nanochat.KNOWN_GOOD_COMMIT  # the known-good default, not master


def test_the_api_takes_a_mapping_and_refuses_like_the_cli(api, speedq: Speedq) -> None:  # noqa: F811
    client, tokens = api
    alpha = bearer(tokens["alpha"])
    ok = client.post("/v1/jobs", json={"backend": "sim", "train_args": {"max-seq-len": 128, "fp8": False}},
                     headers=alpha)
    assert ok.status_code == 201, ok.text
    bad = client.post("/v1/jobs", json={"backend": "sim", "run_name": "x", "train_args": {"save-every": 3}},
                      headers=alpha)
    cli = speedq.run("submit", "--team", "alpha", "--backend", "sim", "--run-name", "x", "--train-arg", "save-every=3")
    assert bad.status_code == 422 and cli.returncode == 2
    assert cli.stderr.strip() == f"error: {bad.json()['detail']}"
    assert "save-every is set by speedq" in cli.stderr


def test_train_args_reach_base_train_as_argv_and_win(tmp_path: Path) -> None:
    spec = SubmitRequest(backend="local", gpu="CPU:1", mode="smoke",
                         train_args={"max-seq-len": "128", "total-batch-size": 512, "device-batch-size": "4",
                                     "eval-every": 5, "head-dim": 64}).spec_for("alpha")
    assert isinstance(spec, JobSpec) and spec.gpu.type == "CPU"
    req = RunRequest(job_id="sq-1", attempt=1, model=spec.model, mode=spec.mode, nproc=1, gpu_type="CPU",
                     commit="c", repo="r", run_dir=str(tmp_path), data_dir=str(tmp_path), cache_dir=str(tmp_path),
                     launcher="python", train_args=dict(spec.train_args))
    flags = runner.plan(req)[3].flags
    assert "--max-seq-len=128" in flags and "--total-batch-size=512" in flags and "--head-dim=64" in flags
    assert flags.count("--device-batch-size=4") == 1 and "--eval-every=5" in flags and "--eval-every=-1" not in flags
    assert "--fp8" not in flags and "--num-iterations=10" in flags
