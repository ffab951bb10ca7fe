"""The nanochat repository a job runs: karpathy's by default, or a fork's https URL.

The URL reaches git only as one argv element after `--` or `--end-of-options` (speedq/gpu/git.py),
never a shell; the rules below also keep out what git itself would read as an option or as
another transport (`-u...`, `ext::sh -c ...`, `file://`, `ssh://`, scp-like `host:path`), any
credentials (a stored URL is shown wherever the job is), ports, queries and fragments.

Which hosts are allowed is the operator's (SPEEDQ_REPO_HOSTS). That list is checked at submit
only (`check_host`), not when a stored job is read back, so a job stays readable after the
operator changes the list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import AfterValidator

from speedq import config

MAX_REPO_URL_LEN = 300
MAX_REPO_PATH_PARTS = 6  # owner/repo, or a GitLab group/subgroup/.../repo
HOST_RE = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")
_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_PREFIX = "https://"


def _repo_url(value: str) -> str:
    """`https://HOST/OWNER/REPO[.git]`, returned with the host in lower case and no trailing '/'."""
    if len(value) > MAX_REPO_URL_LEN:
        raise ValueError(f"must be at most {MAX_REPO_URL_LEN} characters")
    if not value.isascii() or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must be plain ASCII without whitespace or control characters")
    if not value.lower().startswith(_PREFIX):
        raise ValueError("must be an https:// URL (no other scheme, no local path)")
    host, _, path = value[len(_PREFIX):].partition("/")
    if "@" in host:
        raise ValueError("must not hold credentials (user@ or user:password@)")
    if ":" in host:
        raise ValueError("must not name a port (the forge's https port 443 is the one used)")
    if not HOST_RE.fullmatch(host.lower()):
        raise ValueError(f"{host!r} is not a host name")
    if any(ch in path for ch in "?#%@:\\"):
        raise ValueError("must be https://HOST/OWNER/REPO: no query, fragment, escapes or '@' in the path")
    parts = path.rstrip("/").split("/")
    if len(parts) < 2 or len(parts) > MAX_REPO_PATH_PARTS:
        raise ValueError("must be https://HOST/OWNER/REPO (the repository's page or clone URL)")
    for part in parts:
        if not _PART_RE.fullmatch(part) or ".." in part or part.endswith("."):
            raise ValueError(f"path part {part!r} is not an owner or repository name")
    return f"{_PREFIX}{host.lower()}/{'/'.join(parts)}"


RepoUrl = Annotated[str, AfterValidator(_repo_url)]


def repo_name(url: str) -> str:
    """The short name: `owner/repo` on github.com, else `host/owner/repo` (no `.git`)."""
    host, _, path = url.removeprefix(_PREFIX).partition("/")
    path = path.removesuffix(".git")
    return path if host == "github.com" else f"{host}/{path}"


def source_text(url: str, ref: str | None) -> str:
    """`owner/repo@abcdef1`: where a run's code came from, as every view shows it (a commit id
    short, a ref not yet pinned as given)."""
    if ref is None:
        return f"{repo_name(url)}@?"
    return f"{repo_name(url)}@{ref[:7] if re.fullmatch(r'[0-9a-f]{40}', ref) else ref}"


def is_default(url: str) -> bool:
    return repo_name(url) == repo_name(config.NANOCHAT_REPO_URL)


def check_host(url: str, hosts: Sequence[str]) -> None:
    """The operator's allow-list (karpathy's repository is always allowed): ValueError if not on it."""
    host = url.removeprefix(_PREFIX).partition("/")[0]
    if not is_default(url) and host not in hosts:
        raise ValueError(f"host {host} is not allowed here (allowed: {', '.join(hosts) or 'none'}; "
                         "an operator sets SPEEDQ_REPO_HOSTS)")


def run_name_part(url: str) -> str:
    """`owner-repo` as a run-name slug part, so a fork's default run has a directory of its own."""
    return re.sub(r"[^a-z0-9]+", "-", repo_name(url).lower()).strip("-")
