"""What the supervision tests share: a Store on the test's Redis with every bound of the loop
made short (polls, backoff, the bounds on silence and confirmation), so a fault plays out in
well under a second."""

from __future__ import annotations

import pytest

from speedq.store import Store
from tests.conftest import RedisServer


@pytest.fixture
def store(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Store:
    redis_server.client().flushall()
    for name, value in {"SPEEDQ_POLL_INTERVAL": "0.02", "SPEEDQ_RETRY_BACKOFF": "0.05", "SPEEDQ_HEARTBEAT_TTL": "5",
                        "SPEEDQ_POLL_FAILURE_BOUND": "0.3", "SPEEDQ_STOP_CONFIRM_TIMEOUT": "0.3",
                        "SPEEDQ_ANNOUNCE_TIMEOUT": "0.3"}.items():
        monkeypatch.setenv(name, value)
    return Store(redis_server.client())
