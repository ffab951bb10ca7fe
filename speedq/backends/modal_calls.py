"""Bounded calls from sync code: Modal's async client under a timeout, and git for a ref."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from speedq.backends.base import BackendError
from speedq.backends.modal_outcomes import one_line
from speedq.threads import in_thread

T = TypeVar("T")
GIT_TIMEOUT_S = 30.0


def run_sync(make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run `make()` under asyncio.wait_for from sync code (in a thread if a loop is running here)."""

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    return in_thread(lambda: asyncio.run(bounded()), timeout + 5)


def has_credentials() -> bool:
    """A Modal token from MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or the active ~/.modal.toml profile."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    from modal.exception import Error as ModalError

    try:
        from modal.config import config as modal_config

        return bool(modal_config.get("token_id")) and bool(modal_config.get("token_secret"))
    except ModalError:  # an unreadable ~/.modal.toml (modal raises InvalidError for it)
        return False


def resolve_locally(repo: str, ref: str) -> str:
    """runner.resolve_commit under a hard bound (git ls-remote; a stuck git is left behind)."""
    from speedq.gpu import runner

    try:
        return in_thread(lambda: runner.resolve_commit(repo, ref), GIT_TIMEOUT_S)
    except TimeoutError:
        raise BackendError(f"resolving nanochat ref {ref!r} took over {GIT_TIMEOUT_S:g}s") from None
    except Exception as exc:
        raise BackendError(f"cannot resolve nanochat ref {ref!r}: {one_line(exc)}") from exc
