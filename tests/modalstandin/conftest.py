"""One stand-in of Modal's control plane for these tests, and the real `modal` client pointed at it.

The server lives for the session (the client caches its connection); each test gets a clean
account (`reset`) and the speedq app's functions deployed in it. Here too what the backend tests
share: the job they launch, a backend bounded at 3 s, and `Watch`, which the fault tests end with.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import modal
import pytest

from speedq import settings
from speedq.backends import modal as mb
from speedq.schemas import JobRecord, JobSpec, Outcome, RunResult
from tests.modalstandin.fake_modal import FakeModal, FakeServer

FUNCTIONS = (mb.FULL_FUNCTION, mb.SMOKE_FUNCTION, mb.PREPARE_FUNCTION, mb.RESOLVE_FUNCTION)
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RUN = "runs/alpha/d12"


class StandIn:
    """The running stand-in, seen the way a test asks it: over its HTTP control API."""

    def __init__(self, server: FakeServer) -> None:
        self.server, self.svc, self.url = server, server.svc, server.control_url

    def http(self, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        with OPENER.open(f"{self.url}{path}", data, timeout=10) as resp:
            return json.loads(resp.read())

    def calls(self) -> list[dict]:
        return self.http("/calls")  # type: ignore[return-value]

    def live(self) -> list[str]:
        """Calls not ended (GET /calls, counting the ones whose state is still running)."""
        return [c["id"] for c in self.calls() if self._running(c)]

    def _running(self, call: dict) -> bool:
        self.svc._apply_cancels()  # a slow cancel's deadline may have passed since the last RPC
        return self.http(f"/calls/{call['id']}")["state"] == "running"  # type: ignore[index]

    def finish(self, call_id: str, state: str, value: object = None) -> None:
        self.http(f"/calls/{call_id}", {"state": state, "value": value})

    def fault(self, **faults: object) -> None:
        self.http("/faults", faults)

    def put(self, path: str, content: str) -> None:
        self.http(f"/volumes/{settings.get().modal_volume}/files", {"path": path, "content": content})


@pytest.fixture(scope="session")
def _server() -> Iterator[FakeServer]:
    server = FakeServer(FakeModal(settings.get().modal_app, FUNCTIONS))
    yield server
    server.stop()


@pytest.fixture
def standin(_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    env = {"MODAL_SERVER_URL": _server.grpc_url, "MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test",
           "MODAL_DISABLE_API_PROXY": "1"}  # the client would send even 127.0.0.1 through an HTTP(S)_PROXY
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MODAL_ENVIRONMENT", raising=False)
    modal.Client._set_env_client(None)  # private: a client cached against another server or loop
    _server.svc.reset()
    yield StandIn(_server)
    _server.svc.reset()


# -- what the backend tests share -------------------------------------------------------------


def record(**spec: object) -> JobRecord:
    fields: dict[str, object] = {"team": "alpha", "model": "d12"}
    fields.update(spec)
    return JobRecord(id="sq-7", spec=JobSpec(**fields), nanochat_commit=COMMIT)


@pytest.fixture
def backend() -> mb.ModalBackend:
    return mb.ModalBackend(timeout_s=3.0)


class Watch:
    """The most live calls the stand-in had at any one look: every fault test ends by asking the
    stand-in (GET /calls) how many calls are not ended, and asserts exactly one for the job."""

    def __init__(self, standin: StandIn) -> None:
        self.standin, self.most = standin, 0

    def look(self) -> list[str]:
        live = self.standin.live()
        self.most = max(self.most, len(live))
        return live


def run_result(outcome: Outcome, **kw: object) -> dict:
    """A RunResult of the job's first attempt, as the function returns it over the wire."""
    return RunResult(job_id="sq-7", attempt=1, outcome=outcome, **kw).model_dump(mode="json")
