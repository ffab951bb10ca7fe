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


def result_name(attempt: int) -> str:
    return f"result-{attempt}.json"


def checkpoint_dir(model: str) -> PurePosixPath:
    """Base-training checkpoints, relative to the run directory (nanochat's base dir)."""
    return PurePosixPath("base_checkpoints") / model


def run_relpath(team: str, run_name: str) -> PurePosixPath:
    """A run's directory under a runs root; team and run name are validated slugs."""
    return PurePosixPath(team) / run_name
