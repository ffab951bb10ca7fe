"""A call on a thread of its own, waited on for a bounded time, and what to do meanwhile."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Overran(TimeoutError):
    """The call was still running at its bound (it is left behind)."""


def in_thread(call: Callable[[], T], timeout: float, every: float = math.inf,
              meanwhile: Callable[[], object] = lambda: None) -> T:
    """call() on a daemon thread, waited on for at most `timeout`, with `meanwhile()` done every
    `every` seconds while it runs (a call done sooner costs none): its value, its own error
    raised here, or Overran."""
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller, below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while True:
        wait = min(every, deadline - time.monotonic())
        thread.join(None if math.isinf(wait) else max(0.0, wait))
        if not thread.is_alive() or time.monotonic() >= deadline:
            break
        meanwhile()
    if errors:
        raise errors[0]
    if not values:
        raise Overran()
    return values[0]
