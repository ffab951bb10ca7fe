"""Watching a Modal call: poll maps only the call's own result to an outcome, never an API fault
(blips, an unreachable API, a wait past its bound); and the run's log and progress read from the
Volume.

Against the stand-in of Modal's control plane (conftest.py), also run as its own process; the fault
tests end by asking it (GET /calls) how many calls are not ended and assert exactly one for the job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import modal
import pytest

from speedq import settings
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.schemas import Outcome
from tests.modalstandin.conftest import RUN, Watch, record, run_result

# -- poll: only the call's own result is an outcome -------------------------------------------


ENDINGS = [
    ("success with a RunResult", "success", run_result(Outcome.succeeded, final_step=10), Outcome.succeeded),
    ("success with no result", "success", None, Outcome.succeeded),
    ("RunResult says crashed", "success", run_result(Outcome.crashed, error="exit 1"), Outcome.crashed),
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
    standin.finish(call_id, "success", run_result(Outcome.succeeded, final_step=10))
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
