"""Shared steps for the multi-team tests: add a team through the CLI, read its token, and read
records straight from the test's Redis."""

from __future__ import annotations

import json

from tests.conftest import Speedq


def add_team(speedq: Speedq, name: str, *limits: str) -> str:
    """`speedq team add`; returns the token it prints last."""
    done = speedq.run("team", "add", name, *limits, check=True)
    return done.stdout.strip().splitlines()[-1]


def records(speedq: Speedq, *filters: str) -> list[dict]:
    return json.loads(speedq.run("ls", "--json", "--limit", "1000", *filters, check=True).stdout)


def lasting_snapshot(client) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    """Every key without a TTL: what a refused request must leave alone. A worker's RQ locks
    expire on their own (about a second in tests) and would make the comparison race."""
    return {key: client.dump(key) for key in client.keys("*") if client.ttl(key) == -1}
