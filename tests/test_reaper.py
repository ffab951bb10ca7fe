"""The reaper handles only jobs of workers that died: it leaves running and finished jobs alone,
re-queues a dead worker's job once, and each pass costs the same however many jobs are active."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis
from rq import Queue

from speedq.keys import Keys, queue_name
from speedq.producer import enqueue_in
from speedq.reaper import reap
from speedq.schemas import JobSpec, JobState
from speedq.store import Store
from tests.conftest import RedisServer, Speedq, as_written_by_a_newer_speedq, wait_for

ROOT = Path(__file__).resolve().parents[1]


def submit_many(conn: redis.Redis, count: int, start: int = 0) -> list[str]:
    store = Store(conn)
    return [
        store.create_claiming_run(
            JobSpec(team=f"t{i % 5}", run_name=f"r{i}", backend="sim", mode="smoke"), also=enqueue_in(conn)
        )[0].id
        for i in range(start, start + count)
    ]


def commands_in(conn: redis.Redis, action) -> int:  # type: ignore[no-untyped-def]
    def calls() -> int:
        stats = conn.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    before = calls()
    action()
    return calls() - before


def test_a_pass_costs_the_same_with_ten_or_a_thousand_active_jobs(speedq: Speedq, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    store = Store(conn)
    ids = submit_many(conn, 10)
    for job_id in ids[:5]:
        store.acquire_supervision(job_id, "live-worker", 60)  # five running under a live worker
    few = commands_in(conn, lambda: reap(conn))

    more = submit_many(conn, 990, start=10)
    for job_id in more[:500]:
        store.acquire_supervision(job_id, "live-worker", 60)
    many = commands_in(conn, lambda: reap(conn))

    assert few == many, (few, many)
    assert conn.zcard(Keys.held) == 505


def test_a_running_job_is_never_touched(speedq: Speedq, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.3"
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--smoke")
    speedq.wait_state(job, "running")
    while speedq.status(job)["state"] not in ("succeeded", "failed"):
        assert reap(conn) == []
        time.sleep(0.1)
    record = speedq.status(job)
    assert record["state"] == "succeeded", record["error"]
    assert record["rq_job_id"] == job and len(record["attempts"]) == 1


def test_a_finished_job_of_a_dead_worker_only_gets_its_slot_back(speedq: Speedq, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    store = Store(conn)
    [job] = submit_many(conn, 1)
    store.take_slot("t0", job)
    store.update(job, lambda r: setattr(r, "state", JobState.succeeded))
    # A worker that ended the job and died before releasing its lease and the slot:
    store.acquire_supervision(job, "dead-worker", 0.05)
    time.sleep(0.2)
    record_before = conn.dump(Keys.job(job))
    queue = Queue(queue_name("sim", "t0", "normal"), connection=conn)
    queued_before = queue.count

    assert reap(conn) == []

    assert store.slot_holders("t0") == []
    assert conn.zcard(Keys.held) == 0
    assert conn.dump(Keys.job(job)) == record_before
    assert queue.count == queued_before


def test_a_dead_workers_job_is_requeued_once(speedq: Speedq, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    store = Store(conn)
    [job] = submit_many(conn, 1)
    Queue(queue_name("sim", "t0", "normal"), connection=conn).empty()  # as if popped...
    store.take_slot("t0", job)
    store.acquire_supervision(job, "dead-worker", 0.05)  # ...by a worker that died at once
    time.sleep(0.2)

    assert reap(conn) == [job]
    assert reap(conn) == []  # re-checked: its hold is gone

    record = store.get(job)
    assert record.rq_job_id == f"{job}-1" and record.state == JobState.queued
    assert Queue(queue_name("sim", "t0", "normal"), connection=conn).job_ids == [f"{job}-1"]
    assert store.slot_holders("t0") == []


def test_a_deep_queue_drains_with_no_requeue(speedq: Speedq, redis_server: RedisServer) -> None:
    """Two workers, a deep queue of instant jobs (the benchmark backend): every job finishes, in
    one attempt, never re-queued. (bench/drain.py does 2,000 and prints the rate.)"""
    conn = redis_server.client()
    count = 100
    submit_many(conn, count)
    workers = [
        subprocess.Popen([sys.executable, str(ROOT / "bench" / "benchkit" / "instant_backend.py"), "--burst"],
                         env=speedq.env, stdout=subprocess.DEVNULL, stderr=open(speedq.home / f"drain-{i}.log", "w"))
        for i in range(2)
    ]
    speedq.workers.extend(workers)
    for worker in workers:
        wait_for(lambda w=worker: w.poll() is not None, timeout=600, every=0.5, what="the workers to drain the queue")

    store = Store(conn)
    records = store.get_many(Store.job_id_for(n) for n in range(1, count + 1))
    assert len(records) == count
    unfinished = [(r.id, r.state, r.error) for r in records if r.state != JobState.succeeded]
    assert not unfinished, unfinished[:5]
    assert [r.id for r in records if r.rq_job_id != r.id or len(r.attempts) != 1] == []
    assert conn.zcard(Keys.held) == 0


def test_a_record_this_speedq_cannot_read_does_not_stop_the_pass(speedq: Speedq, redis_server: RedisServer) -> None:
    """A dead worker's job whose record a newer speedq wrote (a spec field this one does not know)
    is left for a worker that can read it; the pass goes on to the other dead workers' jobs."""
    conn = redis_server.client()
    store = Store(conn)
    newer, older = submit_many(conn, 2)
    as_written_by_a_newer_speedq(conn, newer)
    for job in (newer, older):
        store.acquire_supervision(job, "dead-worker", 0.05)
    time.sleep(0.2)

    assert reap(conn, batch=1) == [older]  # the one it cannot read does not take the pass's place
    assert conn.zscore(Keys.held, newer) is not None  # still found by the next pass, by a newer reaper
    assert reap(conn, batch=1) == []
