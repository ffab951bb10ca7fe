"""The Modal backend against stand-ins of the SDK objects it touches (no network)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
import types

import modal
import modal.config
import modal.exception as mexc
import pytest

from speedq import config
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.schemas import JobRecord, JobSpec, Outcome, RunRequest, RunResult
from tests import modal_standins as standins

APP = config.MODAL_APP_NAME
VOL = config.MODAL_VOLUME_NAME
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def record(**spec: object) -> JobRecord:
    fields: dict[str, object] = {"team": "alpha", "model": "d12"}
    fields.update(spec)
    return JobRecord(id="sq-7", spec=JobSpec(**fields), nanochat_commit=COMMIT)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> standins.ModalWorld:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    monkeypatch.delenv("MODAL_ENVIRONMENT", raising=False)
    w = standins.install(monkeypatch)
    w.deploy(APP, mb.FULL_FUNCTION, mb.SMOKE_FUNCTION, mb.RESOLVE_FUNCTION)
    return w


@pytest.fixture
def backend() -> mb.ModalBackend:
    return mb.ModalBackend(timeout_s=2.0)


# -- the stand-ins match the installed package -----------------------------------------------


def _params(fn: object) -> list[inspect.Parameter]:
    params = list(inspect.signature(fn).parameters.values())
    return [p for p in params if p.name not in ("self", "cls")]


@pytest.mark.parametrize("standin, real", standins.SIGNATURES, ids=lambda f: getattr(f, "__qualname__", "?"))
def test_standin_signatures_match_installed_modal(standin: object, real: object) -> None:
    ours = [(p.name, p.kind, p.default) for p in _params(standin)]
    theirs = [(p.name, p.kind, p.default) for p in _params(real)]
    assert ours == theirs


def test_installed_modal_has_what_the_backend_uses() -> None:
    assert modal.__version__ == "1.6.4"
    for method in standins.AIO_METHODS:
        assert callable(getattr(method, "aio", None)), method
    for name in (
        "AuthError", "ConnectionError", "NotFoundError", "OutputExpiredError", "FunctionTimeoutError",
        "InternalFailure", "RemoteError", "ExecutionError", "Error",
    ):
        assert issubclass(getattr(mexc, name), Exception)
    # .get(timeout=0) on a running call raises the built-in TimeoutError; Modal's own timeouts
    # are not built-in TimeoutErrors, so the backend can tell them apart.
    assert not issubclass(mexc.FunctionTimeoutError, TimeoutError)
    assert not issubclass(mexc.OutputExpiredError, TimeoutError)


def test_importing_the_backend_does_not_import_modal() -> None:
    code = "import sys, speedq.backends.modal; assert 'modal' not in sys.modules, 'modal imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- launch ---------------------------------------------------------------------------------


def test_launch_spawns_the_full_function_with_the_jobs_gpu_and_timeout(world, backend) -> None:
    rec = record(attempt_timeout_s="6h")
    call_id = backend.launch(rec, 1)
    assert call_id.startswith("fc-")
    [call] = world.spawns
    assert (call.app_name, call.function_name) == (APP, "run_speedrun")
    assert call.options == {"gpu": "H100:8", "timeout": 6 * 3600}
    assert call.args == ()
    req = RunRequest.model_validate_json(call.kwargs["request"])
    assert req.job_id == "sq-7" and req.attempt == 1 and req.commit == COMMIT
    assert req.run_dir == "/vol/runs/alpha/d12"
    assert (req.data_dir, req.cache_dir) == ("/vol/data", "/vol/cache")
    assert (req.nproc, req.gpu_type, req.mode, req.launcher) == (8, "H100", "full", "torchrun")
    assert backend.run_dir(rec) == "/vol/runs/alpha/d12"


def test_smoke_launch_uses_test_10_steps_and_the_gpu_override(world, backend) -> None:
    rec = record(mode="smoke", gpu="a100-80gb:2", force_restart=True)
    backend.launch(rec, 2)
    [call] = world.spawns
    assert call.function_name == "test_10_steps"
    assert call.options["gpu"] == "A100-80GB:2"
    req = RunRequest.model_validate_json(call.kwargs["request"])
    assert (req.nproc, req.attempt, req.force_restart) == (2, 2, True)
    assert req.run_dir == "/vol/runs/alpha/d12-smoke"


def test_launch_against_a_missing_deployment_is_a_backend_error(world, backend) -> None:
    world.deployed.clear()
    with pytest.raises(BackendError, match="modal deploy"):
        backend.launch(record(), 1)


def test_launch_with_a_rejected_token_is_a_backend_error(world, backend) -> None:
    world.authorized = False
    with pytest.raises(BackendError, match="credentials"):
        backend.launch(record(), 1)


# -- poll -----------------------------------------------------------------------------------


def _result(outcome: Outcome, **kw: object) -> dict:
    return RunResult(job_id="sq-7", attempt=1, outcome=outcome, **kw).model_dump(mode="json")


ENDINGS = [
    ("success with a RunResult", lambda w, cid: w.finish(cid, _result(Outcome.succeeded, final_step=10)), Outcome.succeeded),
    ("success with no result", lambda w, cid: w.finish(cid, None), Outcome.succeeded),
    ("RunResult says crashed", lambda w, cid: w.finish(cid, _result(Outcome.crashed, error="exit 1")), Outcome.crashed),
    ("function timeout", lambda w, cid: w.fail(cid, mexc.FunctionTimeoutError("timed out after 21600s")), Outcome.timed_out),
    ("internal failure", lambda w, cid: w.fail(cid, mexc.InternalFailure("worker preempted")), Outcome.preempted),
    ("remote error", lambda w, cid: w.fail(cid, mexc.RemoteError("container exited with code 137")), Outcome.crashed),
    ("execution error", lambda w, cid: w.fail(cid, mexc.ExecutionError("could not deserialize")), Outcome.crashed),
    ("the function's own exception", lambda w, cid: w.fail(cid, RuntimeError("nanochat blew up")), Outcome.crashed),
    ("not found", lambda w, cid: w.fail(cid, mexc.NotFoundError("no such call")), Outcome.lost),
    ("expired", lambda w, cid: w.calls.pop(cid), Outcome.lost),
]


@pytest.mark.parametrize("how, end, outcome", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_poll_maps_every_ending(world, backend, how, end, outcome) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    assert backend.poll(rec, call_id).running
    end(world, call_id)
    status = backend.poll(rec, call_id)
    assert status.outcome == outcome, status
    if outcome is not Outcome.succeeded:
        assert status.error
    if how == "success with a RunResult":
        assert status.result is not None and status.result.final_step == 10


def test_poll_never_blocks(world, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    started = time.monotonic()
    for _ in range(20):
        assert backend.poll(rec, call_id).running
    assert time.monotonic() - started < 2


def test_cancel_terminates_containers_and_polls_as_cancelled(world, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    backend.cancel(call_id)
    assert world.calls[call_id].cancelled_with == {"terminate_containers": True}
    assert backend.poll(rec, call_id).outcome is Outcome.cancelled


def test_cancel_of_an_unknown_call_is_quiet(world, backend) -> None:
    backend.cancel("fc-gone")


def test_a_new_backend_reattaches_by_id_without_a_second_spawn(world, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    other = mb.ModalBackend(timeout_s=2.0)  # a new worker process, knowing only the stored id
    assert other.poll(rec, call_id).running
    world.finish(call_id, _result(Outcome.succeeded))
    assert other.poll(rec, call_id).outcome is Outcome.succeeded
    assert len(world.spawns) == 1


# -- volume files ---------------------------------------------------------------------------


def test_read_log_and_progress_from_the_volume(world, backend) -> None:
    rec = record()
    assert backend.read_log(rec) == ""
    assert backend.read_progress(rec) is None  # no volume yet
    world.write(VOL, "runs/alpha/d12/log.txt", "".join(f"line {i}\n" for i in range(50)))
    world.write(VOL, "runs/alpha/d12/progress.json", '{"stage": "base_train", "step": 12, "total": 100}')
    assert backend.read_log(rec, tail=2) == "line 48\nline 49\n"
    assert backend.read_log(rec).count("\n") == 50
    progress = backend.read_progress(rec)
    assert progress is not None and (progress.stage, progress.step, progress.total) == ("base_train", 12, 100)
    world.write(VOL, "runs/alpha/d12/progress.json", '{"stage": "base_tr')  # half-written
    assert backend.read_progress(rec) is None


def test_log_pointer_names_the_volume_command(backend) -> None:
    pointer = backend.log_pointer(record(run_name="fast-one"))
    assert pointer.location == "modal-volume"
    assert pointer.volume == VOL
    assert pointer.path == "runs/alpha/fast-one/log.txt"
    assert pointer.command == f"modal volume get {VOL} runs/alpha/fast-one/log.txt -"


# -- check, credentials, slow API -----------------------------------------------------------


def test_check_passes_with_a_token_and_a_deployment(world, backend) -> None:
    backend.check()


def test_check_without_credentials_fails_at_once(world, backend, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    monkeypatch.setattr(modal.config, "_user_config", {})
    started = time.monotonic()
    with pytest.raises(BackendError, match="MODAL_TOKEN_ID") as info:
        backend.check()
    assert time.monotonic() - started < 1
    assert "\n" not in str(info.value)


def test_credentials_from_the_modal_toml_profile_count(world, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID")
    monkeypatch.delenv("MODAL_TOKEN_SECRET")
    monkeypatch.setattr(modal.config, "_profile", "default")
    monkeypatch.setattr(modal.config, "_user_config", {"default": {"token_id": "ak-1", "token_secret": "as-1"}})
    assert mb.has_credentials()


def test_check_without_a_deployment_says_deploy(world, backend) -> None:
    world.deployed.clear()
    with pytest.raises(BackendError, match="modal deploy speedq/gpu/modal_app.py"):
        backend.check()


@pytest.mark.parametrize("action", ["check", "launch", "poll", "cancel", "read_log"])
def test_an_unreachable_api_is_a_backend_error_within_the_bound(world, action) -> None:
    backend = mb.ModalBackend(timeout_s=0.3)
    rec = record()
    call_id = backend.launch(rec, 1)
    world.latency_s = 120  # what a client without a route does (about 57 s in reality)
    started = time.monotonic()
    with pytest.raises(BackendError, match="did not answer"):
        if action == "check":
            backend.check()
        elif action == "launch":
            backend.launch(rec, 2)
        elif action == "poll":
            backend.poll(rec, call_id)
        elif action == "cancel":
            backend.cancel(call_id)
        else:
            backend.read_log(rec)
    assert time.monotonic() - started < 2
    assert backend.read_progress(rec) is None  # advisory: never raises


def test_the_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SPEEDQ_MODAL_CALL_TIMEOUT", "4.5")
    assert mb.ModalBackend().timeout_s == 4.5


# -- resolve_ref ----------------------------------------------------------------------------


def test_resolve_ref_uses_git_here_when_there_is_git(world, backend, monkeypatch) -> None:
    fake = types.SimpleNamespace(resolve_commit=lambda repo, ref: COMMIT if ref == "master" else 1 / 0)
    import speedq.gpu

    monkeypatch.setitem(sys.modules, "speedq.gpu.runner", fake)
    monkeypatch.setattr(speedq.gpu, "runner", fake, raising=False)
    monkeypatch.setattr(mb.shutil, "which", lambda name: "/usr/bin/git")
    assert backend.resolve_ref("master") == COMMIT
    with pytest.raises(BackendError, match="nope"):
        backend.resolve_ref("nope")
    assert world.remote_calls == []


def test_resolve_ref_falls_back_to_the_cpu_function_without_git(world, backend, monkeypatch) -> None:
    monkeypatch.setattr(mb.shutil, "which", lambda name: None)
    world.remote_results[(APP, mb.RESOLVE_FUNCTION)] = lambda repo, ref: COMMIT
    assert backend.resolve_ref("master") == COMMIT
    [(app, fn, args, _)] = world.remote_calls
    assert (fn, args) == ("resolve_ref", (config.NANOCHAT_REPO_URL, "master"))
    world.remote_results[(APP, mb.RESOLVE_FUNCTION)] = ValueError("unknown ref 'nope'")
    with pytest.raises(BackendError, match="nope"):
        backend.resolve_ref("nope")
