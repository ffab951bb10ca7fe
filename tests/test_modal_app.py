"""The GPU-side Modal app: its functions' options, and its container bodies run in-process.

Importing the app needs no token or network. The bodies run against a temporary directory that
stands in for /vol, with the simulated nanochat (launcher "sim") in place of the real one.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import modal
import pytest

from speedq import config, settings
from speedq.gpu import layout
from speedq.gpu import modal_app as m
from speedq.schemas import Outcome, RunRequest

FUNCTIONS = {"run_speedrun", "test_10_steps", "prepare_data", "resolve_ref"}


# -- the app as deployed ------------------------------------------------------------------------


def test_the_app_and_its_functions() -> None:
    assert isinstance(m.app, modal.App)
    assert m.app.name == settings.get().modal_app
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
    assert mount.name == settings.get().modal_volume and not mount.read_only


def build_steps(image: modal.Image) -> list[list[str]]:
    """The Dockerfile commands of each layer, base first, as the installed modal builds them."""
    import typing

    import modal._image

    version = max(v for v in typing.get_args(modal._image.ImageBuilderVersion) if v[0].isdigit())
    inner = modal.Image._sync_synchronizer._translate_in(image)  # private: the layers' loaders
    layers = []
    while inner is not None:
        scope = inspect.getclosurevars(inner._load).nonlocals
        if "mount" in scope:  # add_local_python_source: files, no build step
            inner = scope["base_image"]
            continue
        make = scope["dockerfile_function"]
        layers.append(make(version).commands if make else [])
        inner = scope["base_images"].get("base")
    return layers[::-1]


def test_image_takes_torch_only_from_the_cuda_index_and_the_rest_of_nanochat_from_pypi() -> None:
    import shlex

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parent / "data" / "modal" / "nanochat-pyproject.toml").read_text())
    declared = pyproject["project"]["dependencies"]
    [torch_pin] = [d for d in declared if d.startswith("torch")]
    installs = [shlex.split(c.replace("$(command -v python)", "python"))
                for layer in build_steps(m.image) for c in layer if "uv pip install" in c]
    assert installs, "no uv pip install step"
    packages = [[a for a in argv[argv.index("install") + 1:] if not a.startswith("-") and a != "python"
                 and not a.startswith("https://")] for argv in installs]
    with_torch = [i for i, pkgs in enumerate(packages) if any(p.startswith("torch") for p in pkgs)]
    assert len(with_torch) == 1, packages
    torch_step = installs[with_torch[0]]
    assert packages[with_torch[0]] == [torch_pin]  # alone: nothing else is looked up on that index
    assert torch_step[torch_step.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu128"
    for i, argv in enumerate(installs):
        assert "--extra-index-url" not in argv
        if i != with_torch[0]:
            assert "--index-url" not in argv and "--index-strategy" not in argv  # PyPI
    rest = {p for i, pkgs in enumerate(packages) if i != with_torch[0] for p in pkgs}
    assert {d for d in declared if d != torch_pin} <= rest
    assert any(p.startswith("pydantic") for p in rest)
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
    parameters = ["model", "repo_ref", "force_restart", "team", "run_name", "request"]
    assert list(inspect.signature(raw).parameters) == parameters


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
    """Counts what the body asks of the Volume; fails commits or reloads when told to."""

    def __init__(self, fail_commit: bool = False, fail_reload: bool = False) -> None:
        self.commits = 0
        self.reloads = 0
        self.fail_commit, self.fail_reload = fail_commit, fail_reload

    def commit(self) -> None:
        self.commits += 1
        if self.fail_commit:
            raise RuntimeError("commit refused (test)")

    def reload(self) -> None:
        self.reloads += 1
        if self.fail_reload:
            raise RuntimeError("there are open files preventing the operation (test)")


_roots = iter(range(10**6))


def run(req: RunRequest, volume: Volume, vol: Path, call_id: str | None = "fc-test") -> dict:
    """One container: a fresh local disk each time, as on Modal."""
    local = vol.parent / f"local-{next(_roots)}"
    return m.execute(req.model_dump_json(), commit_volume=volume.commit, reload_volume=volume.reload,
                     call_id=call_id, local_root=str(local))


def prepared(req: RunRequest) -> RunRequest:
    """What the CPU function does before the worker spawns the GPU one."""
    m.prepare(req)
    return req


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


# -- the body's order of things, against a stand-in runner (runs whether or not the runner exists) --


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
