"""nanochat's checkpoint files (checkpoint_manager's names): which steps are complete, and pruning."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

KEEP_CHECKPOINTS = 3  # complete base checkpoints kept; older ones are deleted (GBs each)

_readable_cache: dict[tuple[str, int, int], bool] = {}


def _readable(path: Path) -> bool:
    """A .pt (zip) that opens and whose members pass their CRC check, or a meta that parses.

    Cached by (path, size, mtime): a multi-GB checkpoint is read through once, not every scan.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _readable_cache:
        try:
            if path.suffix == ".json":
                ok = isinstance(json.loads(path.read_text()), dict)
            else:
                with zipfile.ZipFile(path) as zf:
                    ok = zf.testzip() is None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            ok = False
        _readable_cache[key] = ok
    return _readable_cache[key]


def checkpoint_files(ckpt_dir: Path, step: int, world_size: int) -> list[Path]:
    """The files nanochat's checkpoint_manager writes for one step."""
    return [
        ckpt_dir / f"model_{step:06d}.pt",
        ckpt_dir / f"meta_{step:06d}.json",
        *(ckpt_dir / f"optim_{step:06d}_rank{rank}.pt" for rank in range(world_size)),
    ]


def checkpoint_steps(ckpt_dir: Path) -> list[int]:
    """Steps with any model file, newest first."""
    steps = []
    for path in Path(ckpt_dir).glob("model_*.pt"):
        digits = path.stem.removeprefix("model_")
        if digits.isdigit():
            steps.append(int(digits))
    return sorted(steps, reverse=True)


def newest_complete_checkpoint(ckpt_dir: Path, world_size: int) -> int | None:
    """Newest step whose model, meta and every rank's optimizer file exist and are readable."""
    for step in checkpoint_steps(Path(ckpt_dir)):
        if all(_readable(p) for p in checkpoint_files(Path(ckpt_dir), step, world_size)):
            return step
    return None


def prune_checkpoints(ckpt_dir: Path, world_size: int, keep: int = KEEP_CHECKPOINTS) -> None:
    """Delete checkpoints older than the `keep` newest complete ones (each is GBs on the Volume)."""
    complete = [s for s in checkpoint_steps(ckpt_dir)
                if all(_readable(p) for p in checkpoint_files(ckpt_dir, s, world_size))]
    if len(complete) <= keep:
        return
    oldest_kept = complete[keep - 1]
    for path in ckpt_dir.iterdir():
        match = re.fullmatch(r"(?:model|meta|optim)_(\d{6})(?:_rank\d+)?\.(?:pt|json)", path.name)
        if match and int(match.group(1)) < oldest_kept:
            path.unlink(missing_ok=True)
