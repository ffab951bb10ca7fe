"""What a worker writes for a job it popped, in the one script it takes it with: the running slot
under the team's max_running, the team's turn and the job's lease, reading the job's record and
its team's spend for the work horse; and nothing at all when the team is full (the job goes back
to its queue and another team gets the turn)."""

from __future__ import annotations

import json

import redis

from speedq.keys import Keys, queue_name
from speedq.producer import submit
from speedq.schemas import JobSpec, TeamSettings
from speedq.store import Store
from speedq.store_leases import reading
from tests.conftest import RedisServer, Speedq, wait_for


def test_a_popped_job_gets_its_slot_turn_and_lease_in_one_step(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=True)
    assert store.slot_holders("alpha") == ["sq-1"]
    assert conn.get(Keys.supervisor("sq-1")) == b"w1" and conn.zscore(Keys.held, "sq-1") is not None
    assert conn.zscore(Keys.turns, "alpha") == 1.0


def test_a_full_teams_pop_writes_nothing(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", max_running=1))
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=True)
    before = {key: conn.dump(key) for key in conn.keys("*")}
    assert not store.take_popped("alpha", "sq-2", "w2", 30, turn=True)
    assert {key: conn.dump(key) for key in conn.keys("*")} == before
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=False)  # a re-delivered job keeps its slot


def test_the_take_reads_what_the_work_horse_starts_from(redis_server: RedisServer) -> None:
    """The record and the team's spend, read with the lease: the work horse forked for the job
    starts from them (speedq.handoff) instead of a round trip of its own."""
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", gpu_hours_budget=50))
    record = submit(conn, JobSpec(team="alpha", backend="sim", run_name="one")).record
    conn.hset(Keys.team("alpha", "gpu-seconds"), mapping={"H100": 3600.0, "A100": 1800.0})

    holder, read, spend = reading(store.take_popped("alpha", record.id, "w1", 30, turn=True) or [])
    assert holder is None and read == record
    assert spend is not None and spend.settings.gpu_hours_budget == 50 and spend.gpu_seconds == 5400
    assert spend.reserved_s == int(record.estimate.gpu_seconds)  # what its own submit reserved

    # Another live worker holds a re-delivered job: the take says who, and reads nothing.
    assert reading(store.take_popped("alpha", record.id, "w2", 30, turn=False) or []) == ("w1", None, None)


def test_a_record_the_worker_cannot_read_fails_its_work_horse_not_the_worker(speedq: Speedq) -> None:
    """A record written by a newer speedq (a spec field this one does not know) is parsed by the
    work horse, not at the pop: that job's horse fails, and the worker goes on to the next job."""
    conn = redis.Redis.from_url(speedq.env["SPEEDQ_REDIS_URL"])
    newer = speedq.submit("--team", "alpha", "--smoke", "--run-name", "newer")
    raw = json.loads(conn.get(Keys.job(newer)) or b"")
    raw["spec"]["field_from_a_newer_version"] = 1
    conn.set(Keys.job(newer), json.dumps(raw))
    healthy = speedq.submit("--team", "beta", "--smoke", "--run-name", "healthy")

    worker = speedq.start_worker("--burst")
    wait_for(lambda: worker.poll() is not None, timeout=120, what="the burst worker to drain its queues")
    assert worker.returncode == 0  # the worker ran to the end of its burst
    assert speedq.status(healthy)["state"] == "succeeded"
    assert conn.zcard(b"rq:failed:" + queue_name("sim", "alpha", "normal").encode()) == 1  # the horse's failure
