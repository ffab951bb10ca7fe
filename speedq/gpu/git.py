"""The nanochat tree a run uses: a ref resolved to a commit, checked out once per commit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from speedq.gpu import layout
from speedq.schemas import RunRequest

GIT_TIMEOUT_S = 120.0
HEX40 = re.compile(r"[0-9a-f]{40}")

def _git(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # a bad URL must fail, not ask for a password
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {done.stderr.strip() or done.stdout.strip() or done.returncode}")
    return done.stdout


def resolve_commit(repo: str, ref: str) -> str:
    """The full commit id `ref` (branch, tag or commit) names in `repo` (a path or a URL)."""
    if not ref or ref.startswith("-"):
        raise ValueError(f"not a git ref: {ref!r}")
    if Path(repo).is_dir():
        try:
            out = _git(["-C", repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"])
        except RuntimeError:
            raise ValueError(f"{ref!r} names no commit in {repo}") from None
        return out.strip()
    listing = _git(["ls-remote", "--end-of-options", repo, ref])
    found: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref, f"{ref}^{{}}"):
        if name in found:
            return found[name]
    if HEX40.fullmatch(ref.lower()):
        return ref.lower()  # a commit id is not advertised; checking it out verifies it
    raise ValueError(f"{ref!r} is no branch or tag of {repo} (give a full 40-character commit id for a commit)")


def checkout(req: RunRequest) -> Path:
    """The nanochat tree at req.commit, cloned once per commit into the cache and reused."""
    commit = req.commit if HEX40.fullmatch(req.commit) else resolve_commit(req.repo, req.commit)
    dest = Path(req.cache_dir) / layout.CHECKOUTS / commit
    if (dest / ".git").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{commit[:12]}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _git(["clone", "--quiet", "--no-checkout", "--", req.repo, str(tmp)])
        _git(["-C", str(tmp), "checkout", "--quiet", "--detach", commit])
        try:
            os.rename(tmp, dest)  # atomic: a half-made checkout never sits at dest
        except OSError:
            if not (dest / ".git").exists():  # not another attempt that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
