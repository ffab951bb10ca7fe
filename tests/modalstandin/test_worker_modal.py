"""A real `speedq worker --backend modal` process, the real modal client in it, the stand-in of
Modal's control plane as another process: an API blip while the job runs.

The worker has no git on its PATH, so it pins the ref through the app's CPU function
`resolve_ref` (answered here) and touches nothing outside the stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from speedq import settings
from speedq.backends import modal_data
from speedq.schemas import Outcome, RunRequest, RunResult
from tests.conftest import Speedq, wait_for
from tests.modalstandin.conftest import COMMIT, OPENER


class StandInProcess:
    def __init__(self) -> None:
        script = Path(__file__).with_name("serve_fake.py")
        self.proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()  # type: ignore[union-attr]
        assert ready and ready[0] == "READY", ready
        self.grpc, self.control = ready[1].removeprefix("grpc="), ready[2].removeprefix("control=")

    def http(self, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        with OPENER.open(f"{self.control}{path}", data, timeout=10) as resp:
            return json.loads(resp.read())

    def calls(self, function: str) -> list[dict]:
        return [c for c in self.http("/calls") if c["function"] == function]  # type: ignore[union-attr]

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture
def modal_standin() -> Iterator[StandInProcess]:
    standin = StandInProcess()
    yield standin
    standin.stop()


def modal_env(standin: StandInProcess) -> dict[str, str]:
    return {"MODAL_SERVER_URL": standin.grpc, "MODAL_TOKEN_ID": "ak-t", "MODAL_TOKEN_SECRET": "as-t",
            "MODAL_DISABLE_API_PROXY": "1", "SPEEDQ_MODAL_CALL_TIMEOUT": "3", "PATH": "/nonexistent"}


def answer_cpu_calls(standin: StandInProcess) -> None:
    """The CPU functions a worker calls before any GPU spawn: pin the ref; prepare the data, which
    leaves the Volume's marker (commit and shard count) as the real function does."""
    for call in standin.calls("resolve_ref"):
        if call["state"] == "running":
            standin.http(f"/calls/{call['id']}", {"state": "success", "value": COMMIT})
    for call in standin.calls("prepare_data"):
        if call["state"] == "running":
            req = RunRequest.model_validate_json((call["args"] or [call["kwargs"].get("request")])[0])
            marker = {"commit": req.commit, "shards": modal_data.shards_for(req)}
            standin.http(f"/volumes/{settings.get().modal_volume}/files",
                         {"path": str(modal_data.data_marker_relpath(req.commit)), "content": json.dumps(marker)})
            standin.http(f"/calls/{call['id']}", {"state": "success", "value": True})


@pytest.mark.parametrize("status", ["UNAVAILABLE", "PERMISSION_DENIED"])
def test_a_worker_rides_out_an_api_blip_with_one_call(speedq: Speedq, modal_standin: StandInProcess, status) -> None:
    job = speedq.run("submit", "--backend", "modal", "--team", "alpha", "--max-attempts", "3", "--no-preflight",
                     check=True)
    job_id = job.stdout.strip().splitlines()[-1]
    speedq.start_worker(backend="modal", env=modal_env(modal_standin))

    def spawned() -> list[dict]:
        answer_cpu_calls(modal_standin)
        return modal_standin.calls("run_speedrun")

    [call] = wait_for(spawned, timeout=60, what="the GPU function's spawn")  # type: ignore[misc]
    [prepared] = modal_standin.calls("prepare_data")  # data before GPUs: prepared, and only once
    assert prepared["state"] == "success"
    most, shown = 0, set()
    modal_standin.http("/faults", {"outputs_status": status, "seconds": 3})
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        most = max(most, len(modal_standin.http("/live")))  # type: ignore[arg-type]
        now = speedq.status(job_id)
        assert now["state"] in ("starting", "running"), "the blip ended the attempt"
        shown.add(now.get("error") or "")
        time.sleep(0.3)
    assert any("poll failed" in e for e in shown), shown  # nothing silent: the blip is on the job
    result = RunResult(job_id=job_id, attempt=1, outcome=Outcome.succeeded, final_step=10)
    modal_standin.http(f"/calls/{call['id']}", {"state": "success", "value": result.model_dump(mode="json")})
    final = speedq.wait_state(job_id, "succeeded", "failed", timeout=60)
    assert final["state"] == "succeeded", final
    assert len(final["attempts"]) == 1
    assert len(modal_standin.calls("run_speedrun")) == 1 and most == 1


def test_a_modal_worker_runs_the_preflight_on_one_gpu_then_the_full_run(
    speedq: Speedq, modal_standin: StandInProcess
) -> None:
    job_id = speedq.run("submit", "--backend", "modal", "--team", "alpha", check=True).stdout.strip().splitlines()[-1]
    speedq.start_worker(backend="modal", env=modal_env(modal_standin))

    def spawned(function: str) -> list[dict]:
        answer_cpu_calls(modal_standin)
        return modal_standin.calls(function)

    [pre] = wait_for(lambda: spawned("test_10_steps"), timeout=60, what="the preflight's spawn")  # type: ignore[misc]
    assert pre["bound_options"]["gpu"] == "H100:1"
    assert modal_standin.calls("run_speedrun") == []  # nothing on 8 GPUs while the preflight runs
    assert speedq.status(job_id)["in_preflight"]
    passed = RunResult(job_id=job_id, attempt=1, outcome=Outcome.succeeded, final_step=20)
    modal_standin.http(f"/calls/{pre['id']}", {"state": "success", "value": passed.model_dump(mode="json")})
    [full] = wait_for(lambda: spawned("run_speedrun"), timeout=60, what="the full run's spawn")  # type: ignore[misc]
    assert full["bound_options"]["gpu"] == "H100:8"
    done = RunResult(job_id=job_id, attempt=2, outcome=Outcome.succeeded, final_step=100)
    modal_standin.http(f"/calls/{full['id']}", {"state": "success", "value": done.model_dump(mode="json")})
    final = speedq.wait_state(job_id, "succeeded", "failed", timeout=60)
    assert final["state"] == "succeeded", final
    assert [(a["preflight"], a["gpu_count"]) for a in final["attempts"]] == [(True, 1), (False, 8)]
    assert final["preflight"]["state"] == "passed"
    assert final["preflight"]["log"]["path"] == "runs/alpha/d12/preflight/log.txt"
    assert len(modal_standin.calls("prepare_data")) == 1  # the full run's data, prepared once for both
