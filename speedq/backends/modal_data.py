"""The Volume's record of prepared data: which nanochat commit, how many shards.

The worker reads it before spawning the CPU `prepare_data` function; the function writes it
(speedq/gpu/modal_app.py). A full run after a smoke run needs more shards than the marker says,
so the missing ones are prepared on a CPU, never on the GPU box.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from speedq.gpu import layout
from speedq.schemas import RunRequest


def data_marker_relpath(commit: str) -> PurePosixPath:
    """The Volume's record of prepared data for one nanochat commit (JSON: commit, shards)."""
    return PurePosixPath("data") / layout.prepared_marker_name(commit)


def shards_for(req: RunRequest) -> int:
    """How many training shards the run needs: the runner's rule, the one place it is asked."""
    from speedq.gpu import runner

    return runner.shards_needed(req)


def marker_covers(raw: bytes | None, commit: str, shards: int) -> bool:
    """Does a data marker say `commit` is prepared with at least `shards` shards?"""
    if not raw:
        return False
    try:
        marker = json.loads(raw)
        return marker["commit"] == commit and int(marker["shards"]) >= shards
    except (ValueError, KeyError, TypeError):
        return False
