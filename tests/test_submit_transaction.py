"""A submit is one atomic write: the run claim, the record, its indexes, the sequence and the RQ
enqueue are all written by one script, which Redis runs with nothing in between; before it, one
read-only script reads what the submit decides on, the team's run history for its cost estimate
included. Seen by Redis's own MONITOR, which shows the
commands a script runs as `[0 lua]` lines after the client's EVALSHA."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from rq import Queue

from speedq.errors import QuotaExceeded
from speedq.estimate import tokens_of
from speedq.keys import Keys, queue_name
from speedq.producer import admit, cancel, enqueue_in, pricing, submit
from speedq.schemas import JobRecord, JobSpec, JobState, RunSample, TeamSettings
from speedq.store import Store, TeamUsage
from tests.conftest import RedisServer, wait_for

READS = {"GET", "ZCARD", "HVALS", "LRANGE"}
# Sent once per connection, not per submit: RQ reads the server's version once and keeps it.
ONCE = {"INFO"}


@contextmanager
def monitored(redis_server: RedisServer, tmp_path: Path, conn: redis.Redis) -> Iterator[list[tuple[bool, str]]]:
    """The commands Redis runs meanwhile, as (run by a script, name), from Redis's own MONITOR;
    ends with the PING it sends to know it has seen them all."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    out = tmp_path / f"monitor-{time.monotonic_ns()}.txt"
    sent: list[tuple[bool, str]] = []
    monitor = subprocess.Popen([cli, "-p", str(redis_server.port), "monitor"], stdout=open(out, "w"))
    try:
        wait_for(lambda: out.read_text().startswith("OK"), timeout=10, what="MONITOR to start")
        yield sent
        conn.ping()
        wait_for(lambda: '"PING"' in out.read_text(), timeout=10, what="the submit's commands")
    finally:
        monitor.kill()
        monitor.wait()
    lines = [line for line in out.read_text().splitlines()[1:] if '"' in line]
    sent += [(" [0 lua] " in line, line.split('"')[1].upper()) for line in lines]


def by_client(sent: list[tuple[bool, str]]) -> list[str]:
    return [name for lua, name in sent if not lua and name not in ONCE]


def test_submit_writes_everything_in_one_script_after_one_read(redis_server: RedisServer, tmp_path: Path) -> None:
    conn = redis_server.client()
    conn.flushall()
    conn.script_flush()
    # The first submit on a server that has not seen the scripts sends each one's text (EVALSHA
    # is refused, then EVAL runs and caches it): two round trips more, once per server.
    first = submit(redis_server.client(), JobSpec(team="alpha", backend="sim", run_name="zero")).record
    assert first.id == "sq-1"
    with monitored(redis_server, tmp_path, conn) as sent:
        done = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one"))

    # The claim's read (the run history for the cost estimate included) and the write: two round
    # trips, then the test's PING
    assert by_client(sent) == ["EVALSHA_RO", "EVALSHA", "PING"], sent
    apply_at = sent.index((False, "EVALSHA"))
    reads = [name for lua, name in sent[:apply_at] if lua]
    assert set(reads) <= READS and "LRANGE" in reads, sent  # the read-only script wrote nothing
    written = [name for lua, name in sent[apply_at + 1:] if lua]
    assert {"SET", "ZADD", "SADD", "HSET", "RPUSH"} <= set(written), sent

    record = done.record
    assert conn.get(Keys.run_claim("alpha", "one")) == record.id.encode()
    assert conn.get(Keys.seq) == b"2" and record.id == "sq-2"
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == [first.id, record.rq_job_id]
    assert record.rq_job_id == "sq-2"  # the stored record names its RQ job: no second write


def test_the_next_submit_of_a_process_writes_at_once_and_one_decided_on_a_stale_guess_is_decided_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    conn = redis_server.client()
    conn.flushall()
    submit(conn, JobSpec(team="alpha", backend="sim", run_name="one"))
    with monitored(redis_server, tmp_path, conn) as sent:
        second = submit(conn, JobSpec(team="alpha", backend="sim", run_name="two")).record
    assert by_client(sent) == ["EVALSHA", "PING"], sent  # its guess of the read was right: one round trip

    # Another producer submits in between: this process's guess (sequence 2, two queued) is stale.
    other = submit(redis_server.client(), JobSpec(team="alpha", backend="sim", run_name="three")).record
    with monitored(redis_server, tmp_path, conn) as sent:
        fourth = submit(conn, JobSpec(team="alpha", backend="sim", run_name="four")).record
    # The write refused the stale guess and answered with what Redis holds; decided again on that
    assert by_client(sent) == ["EVALSHA", "EVALSHA", "PING"], sent
    assert [second.id, other.id, fourth.id] == ["sq-2", "sq-3", "sq-4"]
    assert conn.get(Keys.seq) == b"4" and Store(conn).count("alpha", JobState.queued) == 4
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == ["sq-1", "sq-2", "sq-3", "sq-4"]

    # A guess says the run is free; it is held (by this process's own job): the holder comes back.
    again = submit(conn, JobSpec(team="alpha", backend="sim", run_name="four"))
    assert not again.created and again.record.id == "sq-4" and conn.get(Keys.seq) == b"4"


def test_a_refusal_is_never_made_on_a_guess(redis_server: RedisServer, tmp_path: Path) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", max_queued=1))
    first = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    # The guess now counts one queued job, at the team's max; another client cancels it.
    cancel(redis_server.client(), first.id, "alpha")
    with monitored(redis_server, tmp_path, conn) as sent:
        second = submit(conn, JobSpec(team="alpha", backend="sim", run_name="two"))
    assert second.created and second.record.id == "sq-2"
    assert by_client(sent) == ["EVALSHA_RO", "EVALSHA", "PING"], sent  # refused on the guess: read, then admitted
    with pytest.raises(QuotaExceeded, match="max-queued of 1"):
        submit(conn, JobSpec(team="alpha", backend="sim", run_name="three"))
    assert conn.get(Keys.seq) == b"2"


def test_a_run_claimed_between_a_submits_read_and_its_write_returns_the_holder(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    spec = JobSpec(team="alpha", backend="sim", run_name="one")
    raced: list[JobRecord] = []

    def meanwhile(team: TeamSettings, usage: TeamUsage, needed_s: float) -> None:
        if not raced:  # another producer's submit of the same run lands after this one's read
            raced.append(Store(redis_server.client()).create_claiming_run(spec, also=enqueue_in(conn))[0])

    record, created = Store(conn).create_claiming_run(spec, guard=meanwhile, also=enqueue_in(conn))
    assert not created and record.id == raced[0].id
    assert conn.get(Keys.seq) == b"1"
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == [raced[0].id]


def test_two_submits_racing_for_a_teams_last_queued_place_make_one_job(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", max_queued=1))
    raced: list[JobRecord] = []

    def meanwhile(team: TeamSettings, usage: TeamUsage, needed_s: float) -> None:
        if not raced:
            other = JobSpec(team="alpha", backend="sim", run_name="other")
            raced.append(Store(redis_server.client()).create_claiming_run(other, guard=admit)[0])
        admit(team, usage)

    with pytest.raises(QuotaExceeded, match="max-queued of 1"):
        store.create_claiming_run(JobSpec(team="alpha", backend="sim", run_name="one"), guard=meanwhile)
    assert store.count("alpha", JobState.queued) == 1 and conn.get(Keys.seq) == b"1"
    assert conn.get(Keys.run_claim("alpha", "one")) is None


def test_a_run_that_succeeds_between_a_submits_read_and_its_write_is_in_the_estimate(
    redis_server: RedisServer,
) -> None:
    """The history is in the claim's digest: the estimate stored and reserved is the one made
    from the history the write saw, never one of a history replaced in between."""
    conn = redis_server.client()
    conn.flushall()
    spec = JobSpec(team="alpha", backend="sim", run_name="one", mode="smoke", gpu="CPU:1")
    history = Keys.run_history(spec)
    needed: list[float] = []

    def meanwhile(team: TeamSettings, usage: TeamUsage, needed_s: float) -> None:
        needed.append(needed_s)
        if len(needed) == 1:  # another job of the team's succeeds after this submit's read
            conn.lpush(history, RunSample(job="sq-0", gpu_seconds=7.0, tokens=tokens_of(spec)).model_dump_json())

    record, created = Store(conn).create_claiming_run(spec, guard=meanwhile, also=enqueue_in(conn),
                                                      price=pricing(spec))
    assert created and len(needed) == 2 and needed[1] == 7 != needed[0]  # decided again on the new history
    assert record.estimate is not None and record.estimate.source == "history" and record.estimate.runs == ["sq-0"]
    assert Store(conn).get(record.id).estimate == record.estimate
    assert int(conn.get(Keys.team("alpha", "reserved"))) == 7


def test_an_update_decided_on_a_stale_record_is_decided_again_on_the_stored_one(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    record, _ = store.create_claiming_run(JobSpec(team="alpha", backend="sim", run_name="one"))
    store.update(record.id, lambda r: setattr(r, "cancel_requested", True))  # someone else's write
    after = store.update(record.id, lambda r: setattr(r, "error", "noted"), seen=record)
    assert after.cancel_requested and after.error == "noted"
    assert store.get(record.id) == after
