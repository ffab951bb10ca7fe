"""The real-nanochat tier's fixtures: a clone of the real nanochat, synthetic data and a tokenizer
trained by nanochat itself, one compile cache for the whole session, and `speedq` set up to run
it through the local backend.

Where nanochat, torch or nanochat's own imports cannot be had, every test of the tier skips and
says which one and how to get it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from speedq import config
from tests.conftest import Speedq
from tests.real import processes, synthetic_data, tier_jobs

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path("shared") / "nanochat" / "nanochat.bundle"  # beside the repo: ../shared/nanochat/
HOW_TO_INSTALL = "`pip install -e '.[real]'` (a CPU torch and nanochat's imports) or `make test`"
# What scripts.base_train and scripts.tok_train import (base_train imports scripts.base_eval).
NANOCHAT_MODULES = ("nanochat.gpt", "nanochat.dataloader", "nanochat.tokenizer", "nanochat.checkpoint_manager",
                    "scripts.base_eval")
CLONE_TIMEOUT_S = 300


def _main_checkout() -> Path | None:
    """The main checkout when this repo is a git worktree (its ../shared is the one beside it)."""
    try:
        git = ["git", "-C", str(REPO_ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"]
        common = subprocess.run(git, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(common).parent


def nanochat_source() -> tuple[str | None, str]:
    """(where to clone nanochat from, why not) in the documented order: the bundle beside the
    repo, SPEEDQ_NANOCHAT_REPO, then GitHub where the network reaches it."""
    tried = []
    for root in (REPO_ROOT, _main_checkout()):
        if root is not None:
            bundle = root.parent / BUNDLE
            if bundle.is_file():
                return str(bundle), ""
            if str(bundle) not in tried:
                tried.append(str(bundle))
    explicit = os.environ.get("SPEEDQ_NANOCHAT_REPO")
    if explicit:
        return explicit, ""
    if shutil.which("git") is None:
        return None, "git is not on PATH"
    try:
        subprocess.run(["git", "ls-remote", "--heads", config.NANOCHAT_REPO_URL], capture_output=True, timeout=30,
                       check=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None, (f"no nanochat: no bundle at {' or '.join(tried)}, SPEEDQ_NANOCHAT_REPO unset, "
                      f"and {config.NANOCHAT_REPO_URL} unreachable")
    return config.NANOCHAT_REPO_URL, ""


def _missing_import(tree: Path, modules: tuple[str, ...]) -> str | None:
    """The first import of `modules` that fails in nanochat's tree, as its error line."""
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    done = subprocess.run([sys.executable, "-c", code, *modules], cwd=tree, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


@dataclass(frozen=True)
class Nanochat:
    """A clone of the real nanochat, the data and tokenizer it trains on, and a compile cache."""

    tree: Path
    commit: str
    data_dir: Path
    cache_dir: Path  # speedq's: the runner's per-commit checkout, kept for the session
    compile_cache: Path
    setup_log: Path


@pytest.fixture(scope="session")
def nanochat(tmp_path_factory: pytest.TempPathFactory) -> Nanochat:
    if shutil.which("git") is None:
        pytest.skip("the real-nanochat tier needs git on PATH")
    if importlib.util.find_spec("torch") is None:
        pytest.skip(f"the real-nanochat tier needs torch, which is not installed: {HOW_TO_INSTALL}")
    source, why = nanochat_source()
    if source is None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("nanochat")
    tree = root / "nanochat"
    clone = subprocess.run(["git", "clone", "--quiet", "--", source, str(tree)], capture_output=True, text=True,
                           timeout=CLONE_TIMEOUT_S, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if clone.returncode != 0:
        pytest.skip(f"cannot clone nanochat from {source}: {clone.stderr.strip()}")
    # The known-good commit where the clone has it; else whatever the source's default branch is.
    subprocess.run(["git", "-C", str(tree), "checkout", "--quiet", "--detach", config.DEFAULT_REPO_REF],
                   capture_output=True, timeout=60)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    missing = _missing_import(tree, NANOCHAT_MODULES)
    if missing:
        pytest.skip(f"nanochat {commit[:7]} cannot be imported here ({missing}); install with {HOW_TO_INSTALL}")

    data_dir, log = root / "data", root / "setup-log.txt"
    synthetic_data.write_shards(data_dir, shards_for_tier(root))
    synthetic_data.train_tokenizer(tree, data_dir, dict(os.environ), log)
    # A cache dir given from outside (TORCHINDUCTOR_CACHE_DIR) is kept: a second run starts warm.
    compile_cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or root / "inductor-cache")
    compile_cache.mkdir(parents=True, exist_ok=True)
    return Nanochat(tree=tree, commit=commit, data_dir=data_dir, cache_dir=root / "speedq-cache",
                    compile_cache=compile_cache, setup_log=log)


def shards_for_tier(root: Path) -> int:
    """As many training shards as the runner asks nanochat for, for every job of the tier."""
    from speedq.gpu import runner
    from speedq.schemas import RunRequest

    needed = []
    for mode, args in tier_jobs.JOBS:
        req = RunRequest(job_id="tier", attempt=1, model=tier_jobs.MODEL, mode=mode, nproc=1, gpu_type="CPU",
                         commit="-", repo="-", run_dir=str(root), data_dir=str(root), cache_dir=str(root),
                         train_args=args)
        try:
            needed.append(runner.shards_needed(req))
        except TypeError:  # the runner before it sized runs by their train args
            needed.append(runner.shards_needed(tier_jobs.DEPTH, mode))
    return max(needed)


@pytest.fixture
def real_speedq(speedq: Speedq, nanochat: Nanochat) -> Iterator[Speedq]:
    """`speedq` whose local backend runs the clone offline on the prepared data."""
    speedq.env.update(
        SPEEDQ_NANOCHAT_REPO=str(nanochat.tree),
        SPEEDQ_OFFLINE="1",
        SPEEDQ_DATA_DIR=str(nanochat.data_dir),
        SPEEDQ_CACHE_DIR=str(nanochat.cache_dir),
        TORCHINDUCTOR_CACHE_DIR=str(nanochat.compile_cache),
        WANDB_MODE="disabled",
        SPEEDQ_LOG_LEVEL="INFO",
        # The venv's bin first, as in an activated venv: the local backend finds torchrun there
        # and launches training through it, in a session of its own, as on a GPU machine.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), speedq.env.get("PATH", os.defpath)]),
    )
    speedq.env.pop("WORLD_SIZE", None)
    yield speedq
    # torchrun's workers live in sessions of their own; end every process that trains in this
    # test's run directories (the fixture's teardown, not a part of what is tested).
    speedq.stop_all()
    for proc in processes.nanochat_processes(under=speedq.home):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)


_tier_started: list[float] = []


@pytest.fixture(scope="session", autouse=True)
def tier_wall_time() -> None:
    _tier_started.append(time.monotonic())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The tier's wall time, set-up included (the closing note of issue 9 asks for it)."""
    if _tier_started:
        terminalreporter.write_line(f"real-nanochat tier: {time.monotonic() - _tier_started[0]:.0f}s wall time")
