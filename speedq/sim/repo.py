"""The sim nanochat as a real git repository, so the runner resolves refs and checks out commits
of it exactly as it does for a clone of karpathy/nanochat."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from speedq.sim import SIM_TREE

BRANCH = "master"
_IDENTITY = ["-c", "user.name=speedq sim", "-c", "user.email=sim@speedq.invalid", "-c", "commit.gpgsign=false"]
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")


def _git(dest: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *_IDENTITY, "-C", str(dest), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {dest}: {done.stderr.strip()}")
    return done.stdout


def ensure_sim_repo(dest: Path) -> Path:
    """A git repository at `dest` whose `master` holds the shipped sim tree; idempotent.

    When the shipped tree changed since the last call, the change is committed on top, so refs
    pinned earlier still resolve. Concurrent callers (several workers) serialize on a lock file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / ".git").exists():
            dest.mkdir(parents=True, exist_ok=True)
            _git(dest, "init", "--quiet")
            _git(dest, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
        # The shipped tree replaces the worktree's contents; git then sees what changed.
        for entry in dest.iterdir():
            if entry.name == ".git":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.copytree(SIM_TREE, dest, ignore=_IGNORED, dirs_exist_ok=True)
        _git(dest, "add", "--all")
        if _git(dest, "status", "--porcelain").strip():
            _git(dest, "commit", "--quiet", "-m", "simulated nanochat (speedq)")
    return dest
