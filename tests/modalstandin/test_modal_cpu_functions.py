"""The Modal app's CPU functions, called before any GPU is: prepare_data (the data before the GPUs,
run to completion through API blips, once per commit and shard count) and resolve_ref (pinning a
ref where the worker has no git).

Against the stand-in of Modal's control plane (conftest.py), which plays the CPU container.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable

import pytest

from speedq import config
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.gpu import layout
from speedq.schemas import RunRequest
from tests.modalstandin.conftest import COMMIT, StandIn, record

# -- prepare: data before GPUs ------------------------------------------------------------------


def _marker(shards: int, commit: str = COMMIT) -> str:
    return json.dumps({"commit": commit, "shards": shards})


def _on_prepare_call(standin: StandIn, act: Callable[[str], None]) -> threading.Thread:
    """The CPU container: `act` on the preparation's call once it exists."""

    def body() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = [c for c in standin.calls() if c["function"] == mb.PREPARE_FUNCTION]
            if calls:
                act(calls[0]["id"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def _play_prepare(standin: StandIn, shards: int, blip: str | None = None) -> threading.Thread:
    """The CPU container: writes the marker and succeeds (optionally while the API blips)."""

    def succeed(call_id: str) -> None:
        if blip:
            standin.fault(outputs_status=blip, seconds=1.0)
        standin.put(f"data/{layout.prepared_marker_name(COMMIT)}", _marker(shards))
        time.sleep(0.5)
        standin.finish(call_id, "success", True)

    return _on_prepare_call(standin, succeed)


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
    _on_prepare_call(standin, lambda call_id: standin.finish(call_id, "failure", "no route to HF"))
    with pytest.raises(BackendError, match="no route to HF"):
        backend.prepare(record())


def test_marker_covers() -> None:
    assert mb.marker_covers(_marker(8).encode(), COMMIT, 8)
    assert not mb.marker_covers(_marker(8).encode(), COMMIT, 9)
    assert not mb.marker_covers(_marker(99, "f" * 40).encode(), COMMIT, 8)
    assert not mb.marker_covers(b'{"commit": ', COMMIT, 8)
    assert not mb.marker_covers(None, COMMIT, 8)


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
