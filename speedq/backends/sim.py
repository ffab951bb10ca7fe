"""The sim backend: the local backend pointed at the simulated nanochat shipped with speedq.

It runs the real runner, stages, checkpoints and progress lines on a CPU in seconds, so a team
can try speedq, and speedq's tests exercise everything above Modal, without a GPU.
"""

from __future__ import annotations

from pathlib import Path

from speedq import config, settings
from speedq.backends.local import Launcher, LocalBackend
from speedq.gpu import nanochat
from speedq.schemas import repo as repos
from speedq.sim.repo import BRANCH


class SimBackend(LocalBackend):
    name = "sim"

    def __init__(
        self, runs_root: Path | None = None, data_root: Path | None = None, cache_root: Path | None = None
    ) -> None:
        super().__init__(repo=str(settings.get().state_home() / "sim-nanochat"), runs_root=runs_root,
                         data_root=data_root, cache_root=cache_root)

    @property
    def launcher(self) -> Launcher:
        return "sim"

    def check(self) -> None:
        super().check()
        self._ensure_repo()

    def resolve_ref(self, ref: str, repo: str = config.NANOCHAT_REPO_URL) -> str:
        self._ensure_repo()
        if ref == nanochat.KNOWN_GOOD_COMMIT and repos.is_default(repo):
            ref = BRANCH  # the sim stands in for the known-good commit, which its repo cannot hold
        return super().resolve_ref(ref, repo)

    def _ensure_repo(self) -> None:
        from speedq.sim.repo import ensure_sim_repo

        ensure_sim_repo(Path(self.repo))
