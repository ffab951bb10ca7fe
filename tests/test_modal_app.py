"""The GPU-side Modal app: its functions' options, and its container bodies run in-process.

Importing the app needs no token or network. The bodies run against a temporary directory that
stands in for /vol, with the simulated nanochat (launcher "sim") in place of the real one.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import modal
import pytest

from speedq import config
from speedq.gpu import layout
from speedq.gpu import modal_app as m
from speedq.schemas import Outcome, RunRequest

FUNCTIONS = {"run_speedrun", "test_10_steps", "prepare_data", "resolve_ref"}


# -- the app as deployed ------------------------------------------------------------------------


def test_the_app_and_its_functions() -> None:
    assert isinstance(m.app, modal.App)
    assert m.app.name == config.MODAL_APP_NAME
    assert {name for name in FUNCTIONS if isinstance(getattr(m, name), modal.Function)} == FUNCTIONS


@pytest.mark.parametrize(
    "name, gpus, timeout",
    [
        ("run_speedrun", [("H100", 8)], 24 * 3600),
        ("test_10_steps", [("H100", 8)], m.SMOKE_TIMEOUT_S),
        ("prepare_data", [], m.PREPARE_TIMEOUT_S),
    ],
)
def test_function_options(name: str, gpus: list, timeout: int) -> None:
    fn = getattr(m, name)
    info = fn.info()  # local: no network for an app defined here
    assert info.gpus == gpus
    assert info.timeout == timeout
    assert info.single_use_containers is True
    mount = info.volumes[config.MODAL_VOLUME_MOUNT]
    assert mount.name == config.MODAL_VOLUME_NAME and not mount.read_only


def test_image_carries_nanochat_dependencies_and_the_volume_is_at_vol() -> None:
    assert isinstance(m.image, modal.Image)
    assert any(p.startswith("torch==") for p in m.NANOCHAT_PACKAGES)
    assert config.MODAL_VOLUME_MOUNT == "/vol"


@pytest.mark.parametrize("name", ["run_speedrun", "test_10_steps"])
def test_modal_run_options_of_the_old_script(name: str) -> None:
    """`modal run FILE::fn --model d12 --repo-ref master [--force-restart]` maps onto the parameters."""
    from modal.cli.run import _add_click_options, _get_cli_runnable_signature, _get_signature, safe_get_type_hints

    raw = getattr(m, name)._source_info_.raw_f  # what `modal run` reads
    sig = _get_cli_runnable_signature(_get_signature(raw), safe_get_type_hints(raw))
    import click

    @click.command()
    def cmd(**kwargs: object) -> None:
        cmd.seen = kwargs  # type: ignore[attr-defined]

    _add_click_options(cmd, sig.parameters)
    cmd.main(["--model", "d12", "--repo-ref", "master", "--force-restart"], standalone_mode=False)
    seen = cmd.seen  # type: ignore[attr-defined]
    assert seen["model"] == "d12" and seen["repo_ref"] == "master" and seen["force_restart"] is True
    assert seen["request"] == ""  # a worker passes request=<RunRequest JSON> instead
    assert list(inspect.signature(raw).parameters) == ["model", "repo_ref", "force_restart", "team", "run_name", "request"]


def test_request_for_the_command_line(tmp_path: Path) -> None:
    req = m.request_for(
        mode="smoke", model="d12", repo_ref="master", force_restart=True, team=m.CLI_TEAM, run_name="",
        job_id="cli-fc-1", root=str(tmp_path),
    )
    assert req.run_dir == str(tmp_path / "runs" / "default" / "d12-smoke")
    assert req.data_dir == str(tmp_path / "data") and req.cache_dir == str(tmp_path / "cache")
    assert (req.nproc, req.gpu_type, req.commit, req.force_restart) == (8, "H100", "master", True)
    full = m.request_for(
        mode="full", model="d20", repo_ref="v1", force_restart=False, team="alpha", run_name="try-2",
        job_id="x", root="/vol",
    )
    assert full.run_dir == "/vol/runs/alpha/try-2"


def test_the_worker_request_matches_the_backends(tmp_path: Path) -> None:
    from speedq.backends.modal import ModalBackend
    from speedq.schemas import JobRecord, JobSpec

    rec = JobRecord(id="sq-1", spec=JobSpec(team="alpha", mode="smoke"), nanochat_commit="a" * 40)
    req = ModalBackend(timeout_s=1).request(rec, 1)
    assert m.parse_request(req.model_dump_json()) == req
    assert m.parse_request(json.loads(req.model_dump_json())) == req


# -- the container bodies, in-process -----------------------------------------------------------

@pytest.fixture
def vol(tmp_path: Path) -> Path:
    return tmp_path / "vol"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> str:
    from speedq.sim import repo as sim_repo

    dest = tmp_path_factory.mktemp("sim") / "nanochat"
    sim_repo.ensure_sim_repo(dest)
    return str(dest)


@pytest.fixture(autouse=True)
def no_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEEDQ_SIM_FAULTS", raising=False)


def sim_request(vol: Path, sim: str, *, mode: str = "smoke", job_id: str = "sq-1", attempt: int = 1,
                force_restart: bool = False) -> RunRequest:
    req = m.request_for(
        mode=mode, model="d4", repo_ref="master", force_restart=force_restart, team="alpha", run_name="",
        job_id=job_id, gpu="H100:2", root=str(vol), repo=sim,
    )
    return req.model_copy(update={"launcher": "sim", "attempt": attempt})


class Volume:
    """Counts what the body asks of the Volume."""

    def __init__(self) -> None:
        self.commits = 0
        self.reloads = 0

    def commit(self) -> None:
        self.commits += 1

    def reload(self) -> None:
        self.reloads += 1


def run(req: RunRequest, volume: Volume, prepare_remote=None) -> dict:
    return m.execute(
        req.model_dump_json(), commit_volume=volume.commit, reload_volume=volume.reload, prepare_remote=prepare_remote
    )


def test_smoke_body(vol: Path, sim: str) -> None:
    volume = Volume()
    req = sim_request(vol, sim)
    result = run(req, volume)
    assert result["outcome"] == Outcome.succeeded.value, result
    run_dir = Path(req.run_dir)
    assert (run_dir / layout.LOG).exists() and (run_dir / layout.PROGRESS).exists()
    assert (run_dir / layout.result_name(1)).exists()
    assert volume.commits >= 1
    assert run_dir.is_relative_to(vol / "runs" / "alpha")


def test_full_body_prepares_data_on_the_cpu_function_once(vol: Path, sim: str) -> None:
    volume = Volume()
    prepared: list[RunRequest] = []

    def prepare_remote(req: RunRequest) -> None:  # what the CPU container would do
        prepared.append(req)
        m.prepare(req)

    first = run(sim_request(vol, sim, mode="full"), volume, prepare_remote)
    assert first["outcome"] == Outcome.succeeded.value, first
    assert len(prepared) == 1 and volume.reloads == 1
    assert m.data_ready(prepared[0])
    run(sim_request(vol, sim, mode="full", job_id="sq-2"), volume, prepare_remote)
    assert len(prepared) == 1  # the data is there now


def test_resume_after_a_crash(vol: Path, sim: str, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = Volume()
    monkeypatch.setenv("SPEEDQ_SIM_FAULTS", "crash@10")  # d4 saves every 7 of its 352 steps
    first = run(sim_request(vol, sim, mode="full"), volume)
    assert first["outcome"] == Outcome.crashed.value
    assert "base_train" in first["error"]
    monkeypatch.delenv("SPEEDQ_SIM_FAULTS")
    second = run(sim_request(vol, sim, mode="full", attempt=2), volume)
    assert second["outcome"] == Outcome.succeeded.value, second
    assert 0 < second["resumed_from_step"] < 10  # the newest checkpoint before the crash at step 10


def test_force_restart_wipes_once_per_job(vol: Path, sim: str) -> None:
    volume = Volume()
    assert run(sim_request(vol, sim, mode="full", job_id="sq-1"), volume)["outcome"] == "succeeded"
    again = run(sim_request(vol, sim, mode="full", job_id="sq-2", force_restart=True), volume)
    assert again["outcome"] == "succeeded" and not again.get("resumed_from_step")
    # Modal restarting the same input: the same job id must not wipe the run a second time
    stray = Path(sim_request(vol, sim, mode="full").run_dir) / "kept.txt"
    stray.write_text("x")
    run(sim_request(vol, sim, mode="full", job_id="sq-2", force_restart=True), volume)
    assert stray.exists()


# -- the body's order of things, against a stand-in runner (runs whether or not the runner exists) --


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch):
    import sys
    import types

    import speedq.gpu
    from speedq.schemas import RunResult

    calls: list[tuple] = []

    def prepare_data(req: RunRequest) -> None:
        calls.append(("prepare_data", req.commit))
        Path(req.data_dir).mkdir(parents=True, exist_ok=True)

    def run(req: RunRequest, on_checkpoint=None) -> RunResult:
        calls.append(("run", req.commit))
        for _ in range(2):
            on_checkpoint()
        if req.env.get("BOOM"):
            raise RuntimeError("boom")
        return RunResult(job_id=req.job_id, attempt=req.attempt, outcome=Outcome.succeeded, final_step=10)

    fake = types.SimpleNamespace(
        prepare_data=prepare_data, run=run, resolve_commit=lambda repo, ref: "c" * 40, calls=calls
    )
    monkeypatch.setitem(sys.modules, "speedq.gpu.runner", fake)
    monkeypatch.setattr(speedq.gpu, "runner", fake, raising=False)
    return fake


def test_body_pins_prepares_once_runs_and_commits(vol: Path, fake_runner) -> None:
    volume = Volume()
    remote: list[str] = []
    req = m.request_for(mode="smoke", model="d12", repo_ref="master", force_restart=False, team="alpha",
                        run_name="", job_id="sq-1", root=str(vol))

    def prepare_remote(r: RunRequest) -> None:
        remote.append(r.commit)
        m.prepare(r)

    result = run(req, volume, prepare_remote)
    assert result["outcome"] == "succeeded" and result["final_step"] == 10
    assert remote == ["c" * 40]  # the ref was pinned before anything ran
    assert fake_runner.calls == [("prepare_data", "c" * 40), ("run", "c" * 40)]
    assert volume.reloads == 1 and volume.commits == 3  # two checkpoints and the end
    run(req, volume, prepare_remote)
    assert remote == ["c" * 40]  # prepared data is reused


def test_body_commits_the_volume_even_when_the_runner_raises(vol: Path, fake_runner) -> None:
    volume = Volume()
    req = m.request_for(mode="full", model="d12", repo_ref="a" * 40, force_restart=False, team="alpha",
                        run_name="", job_id="sq-1", root=str(vol))
    req = req.model_copy(update={"env": {"BOOM": "1"}})
    with pytest.raises(RuntimeError, match="boom"):
        run(req, volume)
    assert volume.commits >= 3
    assert fake_runner.calls[-1] == ("run", "a" * 40)  # a commit id is used as is
