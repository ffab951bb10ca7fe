"""store_apply: a write script's commands are checked before anything is sent, where Redis would
refuse one partway through the script and keep the writes before it (scripts are not undone)."""

from __future__ import annotations

import pytest
import redis

from speedq.store_apply import APPLY, Script, packed, writes
from tests.conftest import RedisServer

_RUN = Script(APPLY + "apply(1) return 1")


@pytest.mark.parametrize(("command", "by"), [
    ("incrby", 2**63), ("incrby", "1e3"), ("incrby", 2.5), ("hincrby", -(2**63) - 1),
    ("incrby", " 5"), ("incrby", "+5"), ("incrby", "007"), ("incrby", "1_0"),
    ("hincrbyfloat", float("inf")), ("hincrbyfloat", float("nan")), ("hincrbyfloat", "x"), ("hincrbyfloat", " 1.5"),
])
def test_an_increment_redis_would_refuse_is_refused_before_any_write_is_sent(
    redis_server: RedisServer, command: str, by: object
) -> None:
    conn = redis_server.client()
    conn.flushall()
    pipe = writes(conn)
    pipe.set("first", "written")
    if command == "incrby":
        pipe.execute_command("INCRBY", "reserved", by)
    else:
        pipe.execute_command(command.upper(), "spent", "H100", by)
    with pytest.raises(ValueError, match="Redis would refuse it"):
        packed(pipe)
    assert conn.keys("*") == []


def test_increments_redis_takes_are_applied(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    pipe = writes(conn)
    pipe.incrby("reserved", 2**63 - 1)
    pipe.hincrbyfloat("spent", "H100", 1.5)
    pipe.hincrby("attempts", "succeeded", 1)
    _RUN.run(conn, (), *packed(pipe))
    assert int(conn.get("reserved")) == 2**63 - 1
    assert float(conn.hget("spent", "H100")) == 1.5 and conn.hget("attempts", "succeeded") == b"1"


def test_without_the_check_redis_keeps_the_writes_before_a_refused_increment(redis_server: RedisServer) -> None:
    """Why the check is there: the script stops at the bad increment and keeps what it wrote."""
    conn = redis_server.client()
    conn.flushall()
    with pytest.raises(redis.ResponseError):
        _RUN.run(conn, (), 3, "SET", "first", "written", 3, "INCRBY", "reserved", str(2**63))
    assert conn.get("first") == b"written"
