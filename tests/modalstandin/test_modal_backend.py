"""The Modal backend through the real `modal` 1.6.4 client, against the gRPC stand-in of Modal's
control plane (tests/modalstandin/fake_modal.py), with faults injected.

Every fault test ends by asking the stand-in (GET /calls) how many calls are not ended, and
asserts exactly one for the job; `Watch` records the most seen at any moment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import modal
import modal.config
import pytest

from speedq import config, settings
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.gpu import layout
from speedq.schemas import JobRecord, JobSpec, Outcome, RunRequest, RunResult
from tests.modalstandin.conftest import StandIn

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RUN = "runs/alpha/d12"


def record(**spec: object) -> JobRecord:
    fields: dict[str, object] = {"team": "alpha", "model": "d12"}
    fields.update(spec)
    return JobRecord(id="sq-7", spec=JobSpec(**fields), nanochat_commit=COMMIT)


@pytest.fixture
def backend() -> mb.ModalBackend:
    return mb.ModalBackend(timeout_s=3.0)


class Watch:
    """The most live calls the stand-in had at any one look."""

    def __init__(self, standin: StandIn) -> None:
        self.standin, self.most = standin, 0

    def look(self) -> list[str]:
        live = self.standin.live()
        self.most = max(self.most, len(live))
        return live


def _result(outcome: Outcome, **kw: object) -> dict:
    return RunResult(job_id="sq-7", attempt=1, outcome=outcome, **kw).model_dump(mode="json")


# -- launch ---------------------------------------------------------------------------------


def test_launch_spawns_the_full_function_with_the_jobs_gpu_and_timeout(standin, backend) -> None:
    rec = record(attempt_timeout_s="6h")
    call_id = backend.launch(rec, 1)
    [call] = standin.calls()
    assert call["id"] == call_id and call["function"] == "run_speedrun"
    assert call["bound_options"] == {"gpu": "H100:8", "timeout_secs": 6 * 3600}
    assert call["args"] == []
    req = RunRequest.model_validate_json(call["kwargs"]["request"])
    assert req.job_id == "sq-7" and req.attempt == 1 and req.commit == COMMIT
    assert req.run_dir == "/vol/runs/alpha/d12"
    assert (req.data_dir, req.cache_dir) == ("/vol/data", "/vol/cache")
    assert (req.nproc, req.gpu_type, req.mode, req.launcher) == (8, "H100", "full", "torchrun")
    assert standin.live() == [call_id]


@pytest.mark.parametrize("job_timeout, given", [("24h", mb.SMOKE_TIMEOUT_S), ("1h", 3600)])
def test_smoke_gets_the_smaller_of_the_jobs_timeout_and_its_functions(standin, backend, job_timeout, given) -> None:
    backend.launch(record(mode="smoke", gpu="a100-80gb:2", force_restart=True, attempt_timeout_s=job_timeout), 2)
    [call] = standin.calls()
    assert call["function"] == "test_10_steps"
    assert call["bound_options"] == {"gpu": "A100-80GB:2", "timeout_secs": given}
    req = RunRequest.model_validate_json(call["kwargs"]["request"])
    assert (req.nproc, req.attempt, req.force_restart, req.run_dir) == (2, 2, True, "/vol/runs/alpha/d12-smoke")


def test_a_preflight_attempt_spawns_the_short_function_on_one_gpu_in_its_own_directory(standin, backend) -> None:
    from speedq.schemas import Attempt, PreflightStatus

    rec = record(gpu="H100:8", train_args={"max-seq-len": 1024, "eval-every": 100})
    rec.attempts = [Attempt(number=1, backend="modal", gpu_count=1, preflight=True)]
    rec.preflight = PreflightStatus(steps=config.PREFLIGHT_STEPS, gpu="H100:1", commit=COMMIT)
    backend.launch(rec, 1)
    [call] = standin.calls()
    assert call["function"] == "test_10_steps"
    assert call["bound_options"] == {"gpu": "H100:1", "timeout_secs": mb.SMOKE_TIMEOUT_S}
    req = RunRequest.model_validate_json(call["kwargs"]["request"])
    assert (req.nproc, req.mode, req.preflight_steps, req.force_restart) == (1, "full", 20, True)
    assert req.run_dir == "/vol/runs/alpha/d12/preflight"
    # the job's options, its steps, evals off (the job's eval-every too) and the full run's device batch
    assert req.train_args == {"max-seq-len": 1024, "num-iterations": 20, "eval-every": -1, "core-metric-every": -1,
                              "sample-every": -1, "device-batch-size": 16}
    pointer = backend.log_pointer(rec)
    assert pointer.path == f"{RUN}/preflight/log.txt"
    standin.put(f"{RUN}/preflight/progress.json", '{"stage": "base_train", "step": 4, "total": 20}')
    progress = backend.read_progress(rec)
    assert progress is not None and (progress.step, progress.total) == (4, 20)


def test_the_smoke_cap_is_the_deployed_functions_own_timeout() -> None:
    from speedq.gpu import modal_app

    assert modal_app.test_10_steps.info().timeout == mb.SMOKE_TIMEOUT_S


def test_launch_against_a_missing_deployment_is_a_plain_backend_error(standin) -> None:
    with pytest.raises(BackendError, match="modal deploy") as info:
        mb.ModalBackend(app_name="not-deployed", timeout_s=3).launch(record(), 1)
    assert not isinstance(info.value, mb.LaunchUnknown)  # refused: nothing can be running
    assert standin.calls() == []


# -- poll: only the call's own result is an outcome -------------------------------------------


ENDINGS = [
    ("success with a RunResult", "success", _result(Outcome.succeeded, final_step=10), Outcome.succeeded),
    ("success with no result", "success", None, Outcome.succeeded),
    ("RunResult says crashed", "success", _result(Outcome.crashed, error="exit 1"), Outcome.crashed),
    ("function timeout", "timeout", None, Outcome.timed_out),
    ("internal failure", "internal", None, Outcome.preempted),
    ("terminated", "terminated", None, Outcome.cancelled),
    ("the function's own exception", "failure", "nanochat blew up", Outcome.crashed),
    ("expired", "expired", None, Outcome.lost),
]


@pytest.mark.parametrize("how, state, value, outcome", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_poll_maps_every_ending(standin, backend, how, state, value, outcome) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    assert backend.poll(rec, call_id).running
    standin.finish(call_id, state, value)
    status = backend.poll(rec, call_id)
    assert status.outcome == outcome, status
    if outcome is not Outcome.succeeded:
        assert status.error
    if how == "success with a RunResult":
        assert status.result is not None and status.result.final_step == 10


def test_the_functions_own_connection_error_is_its_outcome(standin, backend) -> None:
    """A ConnectionResetError the function raised ends the call; one on the way does not."""
    rec = record()
    call_id = backend.launch(rec, 1)
    standin.svc.set_outcome(call_id, "failure", ConnectionResetError("peer reset inside the run"))
    status = backend.poll(rec, call_id)
    assert status.outcome is Outcome.crashed and "inside the run" in (status.error or "")


def test_an_unknown_call_is_lost(standin, backend) -> None:
    assert backend.poll(record(), "fc-never-spawned").outcome is Outcome.lost


def test_poll_never_blocks(standin, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    started = time.monotonic()
    for _ in range(20):
        assert backend.poll(rec, call_id).running
    assert time.monotonic() - started < 5


BLIPS = ["UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "RESET"]


@pytest.mark.parametrize("status", BLIPS)
def test_an_api_blip_while_polling_is_never_an_outcome(standin, backend, status) -> None:
    """A few seconds of failing FunctionGetOutputs: every poll in it raises BackendError (keep
    watching), the call is still the job's one live call afterwards, and its result still counts."""
    rec = record()
    watch = Watch(standin)
    call_id = backend.launch(rec, 1)
    standin.fault(outputs_status=status, seconds=2.0)
    failed = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            status_seen = backend.poll(rec, call_id)
        except BackendError as exc:
            failed += 1
            assert "may still run" in str(exc) and "\n" not in str(exc)
        else:
            assert status_seen.running, status_seen  # never an outcome during the blip
        watch.look()
        time.sleep(0.2)
    assert failed >= 1
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.2)
    assert backend.poll(rec, call_id).running
    assert watch.look() == [call_id] and watch.most == 1
    standin.finish(call_id, "success", _result(Outcome.succeeded, final_step=10))
    assert backend.poll(rec, call_id).outcome is Outcome.succeeded


UNREACHABLE = """
import json, sys, time
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.schemas import JobRecord, JobSpec
rec = JobRecord(id="sq-7", spec=JobSpec(team="alpha", model="d12"), nanochat_commit="0" * 40)
backend = mb.ModalBackend(timeout_s=0.5)
actions = {"check": backend.check, "poll": lambda: backend.poll(rec, "fc-1"), "cancel": lambda: backend.cancel("fc-1"),
           "read_log": lambda: backend.read_log(rec), "announced": lambda: backend.announced(rec, 1),
           "launch": lambda: backend.launch(rec, 1)}
for name, action in actions.items():
    started = time.monotonic()
    try:
        action()
        raised = None
    except BackendError as exc:
        raised = type(exc).__name__ + ": " + str(exc)
    print(json.dumps({"action": name, "s": time.monotonic() - started, "raised": raised}))
print(json.dumps({"action": "read_progress", "value": backend.read_progress(rec)}), flush=True)
"""


def test_an_unreachable_api_is_a_backend_error_within_the_bound(tmp_path) -> None:
    """In a process of its own: the client's abandoned retries go on for a minute in the background
    and then print tracebacks, which must not land in the middle of other tests."""
    import os
    import socket

    with socket.socket() as s:  # a port nobody listens on: the client retries for about a minute
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "MODAL_SERVER_URL": dead, "MODAL_TOKEN_ID": "ak-t", "MODAL_TOKEN_SECRET": "as-t",
           "MODAL_DISABLE_API_PROXY": "1"}
    done = subprocess.run([sys.executable, "-c", UNREACHABLE], env=env, capture_output=True, text=True, timeout=120)
    rows = {row["action"]: row for row in map(json.loads, done.stdout.splitlines())}
    for name in ("check", "poll", "cancel", "read_log", "announced"):
        raised = rows[name]["raised"] or ""
        assert "no answer within 0.5s" in raised or "did not answer" in raised, rows[name]
        # returned at the bound, not after the client's own retry loop (about 57 s); generous, as the
        # machine may be loaded
        assert rows[name]["s"] < 20, rows[name]
    # the lookup before the spawn failed: nothing was sent, so a plain BackendError, not LaunchUnknown
    assert rows["launch"]["raised"].startswith("BackendError") and rows["launch"]["s"] < 20
    assert rows["read_progress"]["value"] is None  # advisory: never raises


def test_a_spawn_sent_without_an_answer_in_time_is_launch_unknown(standin) -> None:
    standin.fault(map_fault="hang", map_count=1)
    backend = mb.ModalBackend(timeout_s=1.0)
    fn = backend._bound_function(mb.FULL_FUNCTION)  # the lookup answered: what follows is the spawn's
    with pytest.raises(mb.LaunchUnknown, match="no answer within 1s"):
        backend._spawn(fn, "a spawn", request="{}")
    assert len(standin.live()) == 1


# -- spawn with an unknown outcome ------------------------------------------------------------


def _announce(standin: StandIn, attempt: int, call_id: str, run: str = RUN) -> None:
    """What the container writes into the run directory as its first act."""
    body = {"attempt": attempt, "call_id": call_id, "host": "modal", "pid": 1, "started_at": time.time()}
    standin.put(f"{run}/{layout.announce_name(attempt)}", json.dumps(body))


@pytest.mark.parametrize("fault", ["hang", "drop"])
def test_a_spawn_without_an_answer_is_reconciled_through_the_announcement(standin, fault) -> None:
    """The call was created but its answer never came (no answer at all, or a reset connection
    through all the client's retries): launch raises LaunchUnknown, not a failure; the container's
    announcement then names the call, which is adopted: one live call, never a second spawn."""
    backend = mb.ModalBackend(timeout_s=5.0)  # room for the lookup before the spawn on a loaded machine
    rec = record()
    watch = Watch(standin)
    standin.fault(map_fault=fault, map_count=10)
    with pytest.raises(mb.LaunchUnknown, match="may be running"):
        backend.launch(rec, 1)
    [created] = watch.look()  # the client's retries carried one idempotency key: one call
    assert backend.announced(rec, 1) is None  # the container has not started yet
    _announce(standin, 1, created)
    assert backend.announced(rec, 1) == created
    assert backend.announced(rec, 2) is None
    assert backend.poll(rec, created).running
    assert watch.look() == [created] and watch.most == 1


def test_a_dropped_answer_that_the_client_retries_launches_once(standin, backend) -> None:
    standin.fault(map_fault="drop", map_count=1)
    call_id = backend.launch(record(), 1)
    assert standin.live() == [call_id]
    assert standin.http("/rpc_log").count("FunctionMap") == 2  # type: ignore[union-attr]


def test_without_server_side_dedupe_a_retried_spawn_would_leave_a_second_call(standin, backend) -> None:
    """What the stand-in assumes of Modal (retries of one spawn carry one x-idempotency-key and make
    one call) does not hold here: the client's retry then creates a second call and the worker
    learns only of the second. The first container's claim is overtaken by the second's and it
    stops (tests/test_modal_app.py::test_a_second_call_of_the_same_attempt_takes_over...)."""
    standin.fault(map_fault="drop", map_count=1, dedupe=False)
    call_id = backend.launch(record(), 1)
    calls = standin.calls()
    assert [c["id"] for c in calls] == ["fc-0001", "fc-0002"] and call_id == "fc-0002"
    assert standin.live() == ["fc-0001", "fc-0002"]


def test_a_half_written_announcement_is_not_one(standin, backend) -> None:
    standin.put(f"{RUN}/{layout.announce_name(1)}", '{"attempt": 1, "call_')
    assert backend.announced(record(), 1) is None


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_terminates_containers_and_polls_as_cancelled(standin, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    backend.cancel(call_id)
    [call] = standin.calls()
    assert call["cancelled"] and call["terminate_containers"]
    assert backend.poll(rec, call_id).outcome is Outcome.cancelled


def test_a_slow_cancel_is_running_until_it_has_taken_effect(standin, backend) -> None:
    """The supervisor's way: cancel, poll until ended, only then launch the next attempt."""
    rec = record()
    watch = Watch(standin)
    standin.fault(cancel_delay_s=1.5)
    first = backend.launch(rec, 1)
    backend.cancel(first)
    assert backend.poll(rec, first).running  # requested, not yet done
    assert watch.look() == [first]
    deadline = time.monotonic() + 10
    while backend.poll(rec, first).running:
        assert time.monotonic() < deadline
        watch.look()
        time.sleep(0.1)
    assert backend.poll(rec, first).outcome is Outcome.cancelled
    second = backend.launch(rec, 2)
    assert watch.look() == [second] and watch.most == 1


def test_cancel_of_an_unknown_call_is_quiet(standin, backend) -> None:
    backend.cancel("fc-gone")


def test_an_expired_output_is_lost_and_the_next_attempt_is_the_only_live_call(standin, backend) -> None:
    rec = record()
    watch = Watch(standin)
    first = backend.launch(rec, 1)
    standin.finish(first, "expired")
    assert backend.poll(rec, first).outcome is Outcome.lost
    backend.cancel(first)  # what the supervisor does before any relaunch: harmless here
    second = backend.launch(rec, 2)
    assert watch.look() == [second] and watch.most == 1


def test_a_new_backend_reattaches_by_id_without_a_second_spawn(standin, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    other = mb.ModalBackend(timeout_s=3.0)  # a new worker process, knowing only the stored id
    assert other.poll(rec, call_id).running
    standin.finish(call_id, "success", _result(Outcome.succeeded))
    assert other.poll(rec, call_id).outcome is Outcome.succeeded
    assert len(standin.calls()) == 1


# -- prepare: data before GPUs ------------------------------------------------------------------


def _marker(shards: int, commit: str = COMMIT) -> str:
    return json.dumps({"commit": commit, "shards": shards})


def _play_prepare(standin: StandIn, shards: int, blip: str | None = None) -> threading.Thread:
    """The CPU container: writes the marker and succeeds once its call exists (optionally while
    the API blips)."""

    def body() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            calls = [c for c in standin.calls() if c["function"] == mb.PREPARE_FUNCTION]
            if calls:
                if blip:
                    standin.fault(outputs_status=blip, seconds=1.0)
                standin.put(f"data/{layout.prepared_marker_name(COMMIT)}", _marker(shards))
                time.sleep(0.5)
                standin.finish(calls[0]["id"], "success", True)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_prepare_runs_the_cpu_function_to_completion_through_a_blip(standin, monkeypatch) -> None:
    monkeypatch.setattr(mb, "PREPARE_POLL_EVERY_S", 0.1)
    backend = mb.ModalBackend(timeout_s=2.0)
    rec = record()
    needed = mb.shards_for(mb.ModalBackend().request(rec, 1))
    player = _play_prepare(standin, needed, blip="UNAVAILABLE")
    backend.prepare(rec)
    player.join()
    [call] = standin.calls()
    assert call["function"] == "prepare_data" and call["state"] == "success"
    req = RunRequest.model_validate_json(call["kwargs"]["request"])
    assert (req.commit, req.model, req.mode, req.data_dir) == (COMMIT, "d12", "full", "/vol/data")
    backend.prepare(rec)  # the marker covers it now: no second container
    assert len(standin.calls()) == 1


def test_a_full_run_after_a_smoke_run_prepares_the_missing_shards_on_the_cpu(standin, monkeypatch) -> None:
    monkeypatch.setattr(mb, "PREPARE_POLL_EVERY_S", 0.1)
    backend = mb.ModalBackend(timeout_s=2.0)
    smoke, full = record(mode="smoke"), record()
    assert mb.shards_for(backend.request(smoke, 1)) < mb.shards_for(backend.request(full, 1))
    standin.put(f"data/{layout.prepared_marker_name(COMMIT)}", _marker(mb.shards_for(backend.request(smoke, 1))))
    backend.prepare(smoke)
    assert standin.calls() == []  # the smoke run's shards are there
    player = _play_prepare(standin, mb.shards_for(backend.request(full, 1)))
    backend.prepare(full)
    player.join()
    assert [c["function"] for c in standin.calls()] == ["prepare_data"]


def test_a_failed_preparation_is_a_backend_error(standin, monkeypatch) -> None:
    monkeypatch.setattr(mb, "PREPARE_POLL_EVERY_S", 0.1)
    backend = mb.ModalBackend(timeout_s=2.0)
    threading.Timer(0.5, lambda: standin.finish(standin.calls()[0]["id"], "failure", "no route to HF")).start()
    with pytest.raises(BackendError, match="no route to HF"):
        backend.prepare(record())


def test_marker_covers() -> None:
    assert mb.marker_covers(_marker(8).encode(), COMMIT, 8)
    assert not mb.marker_covers(_marker(8).encode(), COMMIT, 9)
    assert not mb.marker_covers(_marker(99, "f" * 40).encode(), COMMIT, 8)
    assert not mb.marker_covers(b'{"commit": ', COMMIT, 8)
    assert not mb.marker_covers(None, COMMIT, 8)


# -- volume files -----------------------------------------------------------------------------


def test_read_log_and_progress_from_the_volume(standin, backend) -> None:
    rec = record()
    assert backend.read_log(rec) == ""
    assert backend.read_progress(rec) is None  # no volume yet
    standin.put(f"{RUN}/log.txt", "".join(f"line {i}\n" for i in range(50)))
    standin.put(f"{RUN}/progress.json", '{"stage": "base_train", "step": 12, "total": 100}')
    assert backend.read_log(rec, tail=2) == "line 48\nline 49\n"
    assert backend.read_log(rec).count("\n") == 50
    progress = backend.read_progress(rec)
    assert progress is not None and (progress.stage, progress.step, progress.total) == ("base_train", 12, 100)
    standin.put(f"{RUN}/progress.json", '{"stage": "base_tr')  # half-written
    assert backend.read_progress(rec) is None


def test_log_pointer_names_the_volume_command(backend) -> None:
    pointer = backend.log_pointer(record(run_name="fast-one"))
    assert (pointer.location, pointer.volume, pointer.path) == (
        "modal-volume", settings.get().modal_volume, "runs/alpha/fast-one/log.txt")
    assert pointer.command == f"modal volume get {settings.get().modal_volume} runs/alpha/fast-one/log.txt -"


# -- check, credentials ---------------------------------------------------------------------


def test_check_passes_with_a_token_and_a_deployment(standin, backend) -> None:
    backend.check()


def test_check_without_a_deployment_says_deploy(standin) -> None:
    with pytest.raises(BackendError, match=re.escape("modal deploy speedq/gpu/modal_app.py")):
        mb.ModalBackend(app_name="not-deployed", timeout_s=3).check()


def test_check_without_credentials_fails_at_once(backend, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr(modal.config, "_user_config", {})
    started = time.monotonic()
    with pytest.raises(BackendError, match="MODAL_TOKEN_ID") as info:
        backend.check()
    assert time.monotonic() - started < 1
    assert "\n" not in str(info.value)


def test_credentials_from_the_modal_toml_profile_count(monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr(modal.config, "_profile", "default")
    monkeypatch.setattr(modal.config, "_user_config", {"default": {"token_id": "ak-1", "token_secret": "as-1"}})
    assert mb.has_credentials()


def test_the_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SPEEDQ_MODAL_CALL_TIMEOUT", "4.5")
    assert mb.ModalBackend().timeout_s == 4.5


def test_importing_the_backend_does_not_import_modal() -> None:
    code = "import sys, speedq.backends.modal; assert 'modal' not in sys.modules, 'modal imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_installed_modal_is_the_pinned_client() -> None:
    assert modal.__version__ == "1.6.4"


# -- resolve_ref ----------------------------------------------------------------------------


def test_resolve_ref_uses_git_here_when_there_is_git(standin, backend, monkeypatch) -> None:
    import types

    import speedq.gpu

    fake = types.SimpleNamespace(resolve_commit=lambda repo, ref: COMMIT if ref == "master" else 1 / 0)
    monkeypatch.setitem(sys.modules, "speedq.gpu.runner", fake)
    monkeypatch.setattr(speedq.gpu, "runner", fake, raising=False)
    monkeypatch.setattr(mb.shutil, "which", lambda name: "/usr/bin/git")
    assert backend.resolve_ref("master") == COMMIT
    with pytest.raises(BackendError, match="nope"):
        backend.resolve_ref("nope")
    assert standin.calls() == []


def test_resolve_ref_falls_back_to_the_cpu_function_without_git(standin, backend, monkeypatch) -> None:
    monkeypatch.setattr(mb.shutil, "which", lambda name: None)

    def answer(value: object, state: str = "success") -> None:
        def body() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                running = [c for c in standin.calls() if c["state"] == "running"]
                if running:
                    standin.finish(running[0]["id"], state, value)
                    return
                time.sleep(0.05)

        threading.Thread(target=body, daemon=True).start()

    answer(COMMIT)
    assert backend.resolve_ref("master") == COMMIT
    call = standin.calls()[0]
    assert (call["function"], call["args"]) == ("resolve_ref", [config.NANOCHAT_REPO_URL, "master"])
    answer("unknown ref 'nope'", "failure")
    with pytest.raises(BackendError, match="nope"):
        backend.resolve_ref("nope")


# -- bounds and the stand-in as its own process ----------------------------------------------------


def test_waiting_gives_up_after_the_blind_limit_and_leaves_the_call_alone(standin) -> None:
    """prepare's wait: transport errors past the bound are a BackendError, never a cancel."""
    backend = mb.ModalBackend(timeout_s=2.0)
    rec = record()
    call_id = backend.launch(rec, 1)
    standin.fault(outputs_status="UNAVAILABLE", seconds=30)
    with pytest.raises(BackendError, match="no good poll"):
        backend.wait(rec, call_id, limit_s=60, every_s=0.1, blind_limit_s=0.5)
    [call] = standin.calls()
    assert not call["cancelled"] and standin.live() == [call_id]


def test_the_stand_in_runs_as_its_own_process(monkeypatch) -> None:
    """serve_fake.py, driven over HTTP like any outside tool would (POST /faults, GET /live)."""
    import os
    import signal
    from pathlib import Path

    from tests.modalstandin.conftest import OPENER

    script = Path(__file__).with_name("serve_fake.py")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()  # type: ignore[union-attr]
        assert ready[0] == "READY", ready
        grpc_url, control = ready[1].removeprefix("grpc="), ready[2].removeprefix("control=")
        for key, value in {"MODAL_SERVER_URL": grpc_url, "MODAL_TOKEN_ID": "ak-t", "MODAL_TOKEN_SECRET": "as-t",
                           "MODAL_DISABLE_API_PROXY": "1"}.items():
            monkeypatch.setenv(key, value)
        modal.Client._set_env_client(None)

        def http(path: str, body: object = None) -> object:
            data = None if body is None else json.dumps(body).encode()
            with OPENER.open(f"{control}{path}", data, timeout=10) as resp:
                return json.loads(resp.read())

        backend = mb.ModalBackend(timeout_s=3.0)
        rec = record()
        call_id = backend.launch(rec, 1)
        http("/faults", {"outputs_status": "INTERNAL", "seconds": 5})
        with pytest.raises(BackendError, match="InternalError"):
            backend.poll(rec, call_id)
        assert http("/live") == [call_id]
    finally:
        modal.Client._set_env_client(None)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
