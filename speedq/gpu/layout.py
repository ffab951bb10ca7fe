"""The files of one run directory: the one place their names are written down.

The runner writes them; backends read them (from local disk or from the Modal Volume).
"""

from __future__ import annotations

from pathlib import PurePosixPath

LOG = "log.txt"
PROGRESS = "progress.json"
LEDGER = "ledger.json"
FORCE_MARKER = ".force-restart-done"  # holds the job id whose force restart already wiped the run
PID = "runner.pid"
# The fence (speedq/gpu/fence.py): which attempt owns the run dir, and who each attempt's runner is.
CLAIM = "claim.json"  # the newest attempt number that claimed the run dir
TRAIN_LOCK = "train.lock"  # every training process holds it shared; a new attempt needs it exclusive
FENCE_PREFIX = "attempt-"  # attempt-<n>.json: the runner's announcement
# The preflight's own run directory, inside the run's: its own log, progress, fence and checkpoints.
PREFLIGHT_DIR = "preflight"

# In the shared data directory (dataset shards and tokenizer, reused by every run).
DATA_LEDGER = ".speedq-data-ledger.json"  # shared stages done there, so no run repeats them
DATA_LOCK = ".speedq-data.lock"  # runs preparing the same data directory take turns
DATA_LOG = "prepare-log.txt"  # output of data preparation run on its own (runner.prepare_data)

# In the cache directory.
CHECKOUTS = "nanochat"  # <cache>/nanochat/<commit>/: one nanochat checkout per pinned commit


def announce_name(attempt: int) -> str:
    return f"{FENCE_PREFIX}{attempt}.json"


def is_fence_file(name: str) -> bool:
    """Files a force restart keeps: the wipe comes after the runner announced itself and claimed
    the run dir, and must not undo either."""
    return name in (CLAIM, TRAIN_LOCK, PID) or (name.startswith(FENCE_PREFIX) and name.endswith(".json"))


def kept_by_force_restart(name: str) -> bool:
    """What a force restart of the full run leaves: the fence, and the preflight that just passed
    (its log is the job's record of it; a preflight wipes its own directory once per job)."""
    return is_fence_file(name) or name == PREFLIGHT_DIR


def result_name(attempt: int) -> str:
    return f"result-{attempt}.json"


def model_tag(model: str, mode: str = "full") -> str:
    """nanochat's --model-tag: `d12`; a smoke run's 10 steps never pass for a full run's."""
    return model if mode == "full" else f"{model}-smoke"


def checkpoint_dir(model: str, mode: str = "full") -> PurePosixPath:
    """Base-training checkpoints, relative to the run directory (nanochat's base dir)."""
    return PurePosixPath("base_checkpoints") / model_tag(model, mode)


def run_relpath(team: str, run_name: str) -> PurePosixPath:
    """A run's directory under a runs root; team and run name are validated slugs."""
    return PurePosixPath(team) / run_name


def prepared_marker_name(commit: str) -> str:
    """In the shared data dir: {commit, shards} once data for `commit` is prepared (Modal)."""
    return f".speedq-prepared-{commit}.json"
