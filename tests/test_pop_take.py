"""What a worker's pop writes, in the one script it takes a job with: the running slot under the
team's max_running, the team's turn, and the job's lease and hold, reading the job's record and
its team's spend for the work horse; and nothing at all when the team is full (its job stays at
the front of its queue and another team gets the turn). A job leaves its queue only held: a pop
whose answer is lost, or a worker dead before its work horse starts, leaves a hold that expires,
and the reaper puts the job back."""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.job import Job

from speedq import handoff, worker
from speedq.connection import connect
from speedq.fair_share import pop_in_turn
from speedq.keys import Keys, queue_name
from speedq.producer import submit
from speedq.reaper import reap
from speedq.schemas import JobSpec, JobState, TeamSettings
from speedq.store import Store
from speedq.store_leases import reading
from tests.conftest import RedisServer, Speedq, as_written_by_a_newer_speedq, wait_for
from tests.reply_loss import ReplyLoss

ALPHA = Queue(queue_name("sim", "alpha", "normal"), connection=redis.Redis()).key


def test_a_popped_job_gets_its_slot_turn_lease_and_hold_in_one_step_with_its_read(
    redis_server: RedisServer,
) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", gpu_hours_budget=50))
    record = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    conn.hset(Keys.team("alpha", "gpu-seconds"), mapping={"H100": 3600.0, "A100": 1800.0})

    popped = pop_in_turn(conn, {ALPHA: "alpha"}, "w1", 30)
    assert popped is not None and (popped.queue_key, popped.rq_job_id) == (ALPHA, record.id)
    assert store.slot_holders("alpha") == [record.id]
    assert conn.get(Keys.supervisor(record.id)) == b"w1" and conn.zscore(Keys.held, record.id) is not None
    assert conn.zscore(Keys.turns, "alpha") == 1.0
    assert popped.rq_job == conn.hgetall(Job.key_for(record.id))  # what RQ's Job.fetch would read next
    holder, read, spend = reading(popped.reading or [])
    assert holder is None and read == record
    assert spend is not None and spend.settings.gpu_hours_budget == 50 and spend.gpu_seconds == 5400
    assert spend.reserved_s == int(record.estimate.gpu_seconds)  # what its own submit reserved


def test_a_full_teams_job_stays_queued_and_nothing_is_written(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", max_running=1))
    first = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    second = submit(conn, JobSpec(team="alpha", backend="sim", run_name="two")).record
    assert pop_in_turn(conn, {ALPHA: "alpha"}, "w1", 30) is not None
    before = {key: conn.dump(key) for key in conn.keys("*")}
    assert pop_in_turn(conn, {ALPHA: "alpha"}, "w2", 30) is None
    assert {key: conn.dump(key) for key in conn.keys("*")} == before
    assert Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids == [second.id]
    assert store.slot_holders("alpha") == [first.id]


def test_a_job_another_live_worker_holds_is_popped_with_its_holder_named(redis_server: RedisServer) -> None:
    """A re-delivered job still supervised by a live worker: the pop says who, and reads nothing."""
    conn = redis_server.client()
    conn.flushall()
    record = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    Store(conn).acquire_supervision(record.id, "w1", 30)
    popped = pop_in_turn(conn, {ALPHA: "alpha"}, "w2", 30)
    assert popped is not None and reading(popped.reading or []) == ("w1", None, None)


def test_a_pop_whose_answer_is_lost_leaves_its_job_held_and_the_reaper_puts_it_back(
    redis_server: RedisServer,
) -> None:
    """Redis pops the job and the answer never comes back; redis-py asks again and gets the next
    job. The first is not lost: its hold expires and the reaper re-queues it."""
    conn = redis_server.client()
    conn.flushall()
    first = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    second = submit(conn, JobSpec(team="alpha", backend="sim", run_name="two")).record
    proxy = ReplyLoss(redis_server.port)
    client = connect(proxy.url)
    try:
        # An empty queue's pop loads the script, so the answer lost is a pop's
        assert pop_in_turn(client, {ALPHA + ":empty": "alpha"}, "w1", 0.05) is None
        proxy.lose_reply_to(b"EVALSHA")
        popped = pop_in_turn(client, {ALPHA: "alpha"}, "w1", 0.05)
        assert proxy.lost == 1 and popped is not None and popped.rq_job_id == second.id
    finally:
        client.close()
        proxy.close()
    assert first.id not in Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids
    time.sleep(0.2)  # w1 never heard of it: its hold lapses
    assert first.id in reap(conn)
    record = Store(conn).get(first.id)
    assert record.state == JobState.queued
    assert record.rq_job_id in Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids


def a_burst_worker_goes_on_to_a_healthy_job(speedq: Speedq) -> None:
    """Behind a job the worker must pass over, another team's healthy job: a burst worker runs to
    the end of its burst (it did not die on the first) and the healthy job succeeds."""
    healthy = speedq.submit("--team", "beta", "--smoke", "--run-name", "healthy")
    worker = speedq.start_worker("--burst")
    wait_for(lambda: worker.poll() is not None, timeout=120, what="the burst worker to drain its queues")
    assert worker.returncode == 0
    assert speedq.status(healthy)["state"] == "succeeded"


def test_a_record_the_worker_cannot_read_fails_its_work_horse_not_the_worker(speedq: Speedq) -> None:
    """A record written by a newer speedq (a spec field this one does not know): the worker cannot
    parse the pop's read, so it hands none to the work horse, which reads the record itself and
    fails that job; the worker goes on to the next job."""
    conn = redis.Redis.from_url(speedq.env["SPEEDQ_REDIS_URL"])
    newer = speedq.submit("--team", "alpha", "--smoke", "--run-name", "newer")
    as_written_by_a_newer_speedq(conn, newer)
    a_burst_worker_goes_on_to_a_healthy_job(speedq)
    assert conn.zcard(b"rq:failed:" + queue_name("sim", "alpha", "normal").encode()) == 1  # the horse's failure


def test_a_pop_of_a_job_its_holder_has_ended_gives_the_slot_back(redis_server: RedisServer) -> None:
    """A job re-queued while its worker stalled, then ended by that worker, which still holds its
    lease: the pop takes the slot again, the work horse finds the job held, and the slot goes back
    (nothing else would free it: the job has ended and nobody's hold lapses)."""
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    record = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    store.update(record.id, lambda r: setattr(r, "state", JobState.succeeded))
    store.acquire_supervision(record.id, "w1", 30)

    popped = pop_in_turn(conn, {ALPHA: "alpha"}, "w2", 30)
    assert popped is not None and store.slot_holders("alpha") == [record.id]
    assert popped.reading is not None
    handoff.give(record.id, reading(popped.reading), 30, time.monotonic())
    assert worker.Supervisor(store, record.id, "w2").run() == "supervised by w1"
    assert store.slot_holders("alpha") == []


def test_a_job_whose_rq_hash_is_gone_is_skipped_and_the_worker_goes_on(speedq: Speedq) -> None:
    """The pop reads RQ's job hash with the job; a job whose hash is gone is skipped, as RQ's own
    dequeue skips it, and the next job runs."""
    conn = redis.Redis.from_url(speedq.env["SPEEDQ_REDIS_URL"])
    gone = speedq.submit("--team", "alpha", "--smoke", "--run-name", "gone")
    conn.delete(Job.key_for(gone))
    # A hold that outlasts the burst: with the suite's 3 s one, a slow run of the healthy job let
    # the worker's own reaper re-queue the skipped job before these checks
    speedq.env["SPEEDQ_HEARTBEAT_TTL"] = "600"
    a_burst_worker_goes_on_to_a_healthy_job(speedq)
    # Popped and held (its hold lapses, and the reaper re-queues it), never run
    assert gone not in Queue(queue_name("sim", "alpha", "normal"), connection=conn).job_ids
    assert conn.zscore(Keys.held, gone) is not None
    assert speedq.status(gone)["state"] == "queued"


def test_a_record_that_is_not_json_fails_its_work_horse_not_the_pop(speedq: Speedq) -> None:
    """The pop's script reads the record to find its team: a record it cannot decode is handed
    back as it is (a script error would end the script after its pop, and the worker with it),
    and the work horse refuses it."""
    conn = redis.Redis.from_url(speedq.env["SPEEDQ_REDIS_URL"])
    garbled = speedq.submit("--team", "alpha", "--smoke", "--run-name", "garbled")
    conn.set(Keys.job(garbled), b"\xff not json")
    a_burst_worker_goes_on_to_a_healthy_job(speedq)
    assert conn.zcard(b"rq:failed:" + queue_name("sim", "alpha", "normal").encode()) == 1  # the horse's failure


def test_a_reading_is_only_ever_for_the_job_just_popped(redis_server: RedisServer) -> None:
    """A pop the worker could not parse drops the reading an earlier pop left: a retry of the
    same job (a new RQ job) popped within half a lease must not start from the old read."""
    conn = redis_server.client()
    conn.flushall()
    record = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    popped = pop_in_turn(conn, {ALPHA: "alpha"}, "w1", 30)
    assert popped is not None and popped.reading is not None
    handoff.give(record.id, reading(popped.reading), 30, time.monotonic())
    handoff.give(record.id, None, 30, time.monotonic())
    assert handoff.take(record.id) is None
