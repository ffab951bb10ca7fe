"""The GPU-side Modal app (speedq/gpu/modal_app.py): what its tests share.

Importing the app needs no token or network. Its container bodies run in-process against a
temporary directory that stands in for /vol, with the simulated nanochat (launcher "sim") in place
of the real one, and a `Volume` that counts the commits and reloads a body asks for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from speedq.gpu import modal_app as m
from speedq.schemas import RunRequest


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
