"""Forks of the simulated nanochat: a commit on a branch of the sim's git repository, as a
speedrunner pushes a change to their fork, which speedq then resolves, checks out and runs like
any commit. A broken one fails the way a broken fork does: its own code raises, with a
traceback, at the same step every time."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from speedq.sim.repo import BRANCH, ensure_sim_repo

BASE_TRAIN = "scripts/base_train.py"
LOOP_BODY = "        t0 = time.time()\n"  # the first line of a training step in the sim's base_train
SHAPE_ERROR = "RuntimeError: mat1 and mat2 shapes cannot be multiplied (16x320 and 256x1024)"


def sim_repo(home: Path) -> Path:
    """The sim backend's repository under a SPEEDQ_HOME (speedq.backends.sim puts it there)."""
    return ensure_sim_repo(home / "sim-nanochat")


def _git(repo: Path, *args: str, stdin: str | None = None, index: Path | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "fork", "GIT_AUTHOR_EMAIL": "fork@speedq.invalid",
           "GIT_COMMITTER_NAME": "fork", "GIT_COMMITTER_EMAIL": "fork@speedq.invalid"}
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    done = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                          env=env, check=True)
    return done.stdout.strip()


def commit_fork(home: Path, branch: str, path: str, change: str, message: str) -> str:
    """Commit `change` (the file's new text) at `path` on `branch`, made from the sim's master,
    without touching its worktree (the sim backend rewrites that). Returns the commit id."""
    repo = sim_repo(home)
    with open(repo.parent / f".{repo.name}.lock", "w") as lock:  # ensure_sim_repo's lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = repo / ".git" / f"index-{branch}"
        _git(repo, "read-tree", BRANCH, index=index)
        blob = _git(repo, "hash-object", "-w", "--stdin", stdin=change)
        _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", index=index)
        tree = _git(repo, "write-tree", index=index)
        commit = _git(repo, "commit-tree", tree, "-p", BRANCH, "-m", message)
        _git(repo, "update-ref", f"refs/heads/{branch}", commit)
        index.unlink()
    return commit


def broken_fork(home: Path, branch: str = "broken", crash_at: int = 7) -> str:
    """A fork whose change to the model breaks training at step `crash_at`, on every run."""
    source = (sim_repo(home) / BASE_TRAIN).read_text()
    assert source.count(LOOP_BODY) == 1, "the sim's base_train changed: update LOOP_BODY"
    kind, _, text = SHAPE_ERROR.partition(": ")
    crash = (f"        if step == {crash_at}:  # the fork's new MLP shape, wrong once the loop reaches it\n"
             f"            raise {kind}({text!r})\n")
    return commit_fork(home, branch, BASE_TRAIN, source.replace(LOOP_BODY, crash + LOOP_BODY),
                       f"wider MLP (breaks at step {crash_at})")
