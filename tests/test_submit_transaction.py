"""A submit is one Redis transaction: the run claim, the record, its indexes, the sequence and the
RQ enqueue are all written between one MULTI and its EXEC (seen by Redis's own MONITOR)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from rq import Queue

from speedq.keys import Keys, queue_name
from speedq.producer import submit
from speedq.schemas import JobSpec
from tests.conftest import RedisServer, wait_for

READS = {"WATCH", "UNWATCH", "EVAL_RO", "GET", "ZCARD", "HVALS", "EXISTS", "MULTI", "EXEC", "PING", "CLIENT", "HELLO",
         "INFO", "LRANGE"}  # LRANGE: the team's run history, read for the cost estimate


def test_submit_writes_everything_in_one_multi_exec(redis_server: RedisServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    conn = redis_server.client()
    conn.flushall()
    out = tmp_path / "monitor.txt"
    monitor = subprocess.Popen([cli, "-p", str(redis_server.port), "monitor"], stdout=open(out, "w"))
    try:
        wait_for(lambda: out.read_text().startswith("OK"), timeout=10, what="MONITOR to start")
        done = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one"))
        conn.ping()
        wait_for(lambda: '"PING"' in out.read_text(), timeout=10, what="the submit's commands")
    finally:
        monitor.kill()
        monitor.wait()

    commands = [line.split('"')[1].upper() for line in out.read_text().splitlines()[1:] if '"' in line]
    assert commands.count("MULTI") == 1 and commands.count("EXEC") == 1, commands
    start, end = commands.index("MULTI"), commands.index("EXEC")
    outside = [c for i, c in enumerate(commands) if not start < i < end and c not in READS]
    assert outside == [], commands
    inside = commands[start + 1 : end]
    assert {"SET", "ZADD", "SADD", "HSET", "RPUSH"} <= set(inside), inside

    record = done.record
    assert conn.get(Keys.run_claim("alpha", "one")) == record.id.encode()
    assert conn.get(Keys.seq) == b"1" and record.id == "sq-1"
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == [record.rq_job_id]
    assert record.rq_job_id == "sq-1"  # the stored record names its RQ job: no second write
