"""A submit is one atomic write: the run claim, the record, its indexes, the sequence and the RQ
enqueue are all written by one script, which Redis runs with nothing in between; before it, one
read-only script reads what the submit decides on. Seen by Redis's own MONITOR, which shows the
commands a script runs as `[0 lua]` lines after the client's EVAL."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from rq import Queue

from speedq.keys import Keys, queue_name
from speedq.producer import submit
from speedq.schemas import JobSpec
from tests.conftest import RedisServer, wait_for

READS = {"GET", "ZCARD", "HVALS"}
# Sent once per connection, not per submit: RQ reads the server's version once and keeps it.
ONCE = {"INFO"}


def test_submit_writes_everything_in_one_script_after_one_read(redis_server: RedisServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
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

    lines = [line for line in out.read_text().splitlines()[1:] if '"' in line]
    sent = [(" [0 lua] " in line, line.split('"')[1].upper()) for line in lines]
    by_client = [name for lua, name in sent if not lua and name not in ONCE]
    assert by_client == ["EVAL_RO", "EVAL", "PING"], sent  # two round trips, then the test's PING
    apply_at = sent.index((False, "EVAL"))
    reads = [name for lua, name in sent[:apply_at] if lua]
    assert set(reads) <= READS, sent  # the read-only script wrote nothing
    written = [name for lua, name in sent[apply_at + 1:] if lua]
    assert {"SET", "ZADD", "SADD", "HSET", "RPUSH"} <= set(written), sent

    record = done.record
    assert conn.get(Keys.run_claim("alpha", "one")) == record.id.encode()
    assert conn.get(Keys.seq) == b"1" and record.id == "sq-1"
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == [record.rq_job_id]
    assert record.rq_job_id == "sq-1"  # the stored record names its RQ job: no second write
