"""Launching through the Modal backend: which function a job spawns, with what GPU, timeout and
request, and a spawn whose answer never came (LaunchUnknown), reconciled through the container's
announcement so a job never has two live calls.

Against the stand-in of Modal's control plane (conftest.py), with faults injected; the fault tests
end by asking it (GET /calls) how many calls are not ended and assert exactly one for the job.
"""

from __future__ import annotations

import json
import time

import pytest

from speedq import config
from speedq.backends import modal as mb
from speedq.backends.base import BackendError
from speedq.gpu import layout
from speedq.schemas import RunRequest
from tests.modalstandin.conftest import COMMIT, RUN, StandIn, Watch, record

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
    stops (tests/modalapp/test_body_sim.py::test_a_second_call_of_the_same_attempt_takes_over...)."""
    standin.fault(map_fault="drop", map_count=1, dedupe=False)
    call_id = backend.launch(record(), 1)
    calls = standin.calls()
    assert [c["id"] for c in calls] == ["fc-0001", "fc-0002"] and call_id == "fc-0002"
    assert standin.live() == ["fc-0001", "fc-0002"]


def test_a_half_written_announcement_is_not_one(standin, backend) -> None:
    standin.put(f"{RUN}/{layout.announce_name(1)}", '{"attempt": 1, "call_')
    assert backend.announced(record(), 1) is None
