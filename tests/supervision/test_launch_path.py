"""The launch path in the worker's loop: what happens between a work horse's start and the
backend's `launch` (its round trips, a cancel or another worker's attempt meanwhile, the models
the horse must not build), in-process against a real Redis with the scripted backend."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from speedq import config, producer, worker
from speedq.connection import connect
from speedq.fair_share import FairDequeue
from speedq.reaper import reap
from speedq.schemas import Attempt, JobRecord, JobSpec, JobState, Outcome
from speedq.store import Keys, Store
from tests.conftest import RedisServer
from tests.reply_loss import ReplyLoss
from tests.supervision.scripted import Scripted, supervise


def commands_sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command any redis-py connection sends from now on, in order: one per round trip."""
    sent: list[bytes] = []
    send = redis.connection.Connection.send_packed_command

    def counted(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(command)
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    return sent


@pytest.mark.parametrize(("prepares_data", "popped", "round_trips"),
                         [(False, False, 2), (True, False, 5), (False, True, 1), (True, True, 4)])
def test_from_the_work_horse_to_the_launch_is_one_round_trip_or_four_with_data_to_prepare(
    store: Store, monkeypatch: pytest.MonkeyPatch, prepares_data: bool, popped: bool, round_trips: int
) -> None:
    """Take the lease and read the record and its team's budget (checked at a round's start),
    unless the worker's pop did and handed it over; claim the job and write the attempt, with
    the lease checked and renewed. A backend with data to prepare (Modal) marks the job starting
    first, then takes and frees the data lock around the prepare. Each round trip costs a loaded
    machine milliseconds."""
    sent: list[bytes] = []  # counted from the horse's start on (below); Counting reads it then
    at_launch: list[int] = []

    class Counting(Scripted):
        def launch(self, record: JobRecord, attempt: int) -> str:
            at_launch.append(len(sent))
            return super().launch(record, attempt)

    backend = Counting(prepares_data=prepares_data)
    supervise(store, backend, monkeypatch)  # loads redis-py's lock scripts into the server once
    second = producer.submit(store.conn, JobSpec(team="alpha", model="d4", backend="sim", run_name="second")).record
    if popped:  # as a worker takes it: the pop's script reads what the work horse starts from
        pop = FairDequeue([], connection=store.conn, name="w1")
        pop.speedq_backends = ("sim",)
        taken = pop.dequeue_job_and_maintain_ttl(timeout=None)
        assert taken is not None and taken[0].args == (second.id,)
    at_launch.clear()
    sent = commands_sent(monkeypatch)
    worker.Supervisor(store, second.id, "w1").run()
    assert store.get(second.id).state.value == "succeeded"
    before_launch = [bytes(c if isinstance(c, bytes) else b"".join(c))[:60] for c in sent[: at_launch[0]]]
    assert at_launch[0] == round_trips, before_launch


@pytest.mark.parametrize("prepares_data", [False, True])
def test_a_job_cancelled_while_its_launch_was_readied_never_launches(
    store: Store, monkeypatch: pytest.MonkeyPatch, prepares_data: bool
) -> None:
    """The worker read the job queued; it was cancelled before the worker's first write: that
    write, re-run on the record as it is now, stops rather than turn it back to starting."""
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim"))

    class CancelledMeanwhile(Scripted):
        def resolve_ref(self, ref: str, repo: str = "") -> str:
            producer.cancel(store.conn, record.id, "alpha")
            return super().resolve_ref(ref, repo)

    backend = CancelledMeanwhile(prepares_data=prepares_data)
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    assert worker.Supervisor(store, record.id, "w1").run() == "cancelled"
    assert backend.count("launch") == 0 and backend.count("prepare") == 0
    assert store.get(record.id).state.value == "cancelled"
    assert not store.supervised(record.id)


_BUILT_IN_THE_HORSE = """
import sys
from speedq import producer, worker
from speedq.connection import connect
from speedq.schemas import JobSpec
from speedq.schemas.rules import Schema
from speedq.store import Store
from tests.supervision.scripted import Scripted

def built():
    found, todo = set(), [Schema]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__pydantic_complete__:
                found.add(sub.__name__)
    return found

store = Store(connect(sys.argv[1]))
job = producer.submit(store.conn, JobSpec(team="alpha", model="d4", backend="sim", run_name="horse")).record
worker.build_job_models()  # what the worker does before it forks
before = built()
worker.backend_named = lambda name: Scripted(prepares_data=False)
assert worker.Supervisor(store, job.id, "w1").run() == "succeeded"
print(" ".join(sorted(built() - before)))
"""


def test_a_work_horse_builds_no_model_its_worker_could_have_built_once(
    store: Store, redis_server: RedisServer
) -> None:
    """Models are built on first use, and each work horse is a fork that dies with its job: a model
    first used there is built again for every job (about 20 ms before each launch). The worker
    builds every model a job's supervision uses before it forks (worker.build_job_models)."""
    done = subprocess.run(
        [sys.executable, "-c", _BUILT_IN_THE_HORSE, redis_server.url],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


# -- the preflight (issue 12): its attempts go through the same loop, on one GPU ---------------

@pytest.mark.parametrize("prepares_data", [False, True])
def test_an_attempt_begun_by_another_worker_meanwhile_is_watched_not_launched_over(
    store: Store, monkeypatch: pytest.MonkeyPatch, prepares_data: bool
) -> None:
    """Worker w1 read the job with no attempt and was slow to resolve its commit; meanwhile its
    lease lapsed, and w2 began attempt 1 and launched it, then died. w1's write, re-run on the
    record as it is now, must not begin a second attempt 1 beside w2's running call: it watches
    w2's call to its end instead, and launches nothing."""
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim"))

    class OvertakenMeanwhile(Scripted):
        def resolve_ref(self, ref: str, repo: str = "") -> str:
            def other_worker_began(r: JobRecord) -> None:
                r.attempts.append(Attempt(number=1, backend="sim", worker="w2", call_id="call-w2", gpu_count=8))
                r.state, r.worker, r.nanochat_commit = JobState.running, "w2", "c" * 40

            store.update(record.id, other_worker_began)  # w2 holds no lease now: it died
            return super().resolve_ref(ref, repo)

    backend = OvertakenMeanwhile(prepares_data=prepares_data)
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    assert worker.Supervisor(store, record.id, "w1").run() == "succeeded"
    assert backend.count("launch") == 0 and ("poll", "call-w2") in backend.calls
    done = store.get(record.id)
    assert [(a.number, a.worker, a.call_id) for a in done.attempts] == [(1, "w2", "call-w2")]


@pytest.mark.parametrize("prepares_data", [False, True])
def test_an_attempt_whose_write_lost_its_reply_is_launched_once_without_waiting(
    store: Store, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
    prepares_data: bool,
) -> None:
    """Redis runs the write that begins attempt 1, and its answer is lost; redis-py sends it
    again, to a record that already holds that attempt. The worker knows its own attempt: it
    launches it, once, rather than take it for another worker's and wait out its announcement
    (SPEEDQ_ANNOUNCE_TIMEOUT, 15 minutes by default) before fencing it off and launching a second."""
    proxy = ReplyLoss(redis_server.port)
    proxied = Store(connect(proxy.url))
    request.addfinalizer(proxied.conn.close)
    request.addfinalizer(proxy.close)
    record = producer.submit(store.conn, JobSpec(team="alpha", model="d4", backend="sim", preflight=False)).record
    proxied.update(record.id, lambda r: None)  # the server knows the update script: the reply lost is a write's
    proxy.lose_reply_to(b'"attempts":[{"number":1,')
    backend = Scripted(prepares_data=prepares_data)
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)

    assert worker.Supervisor(proxied, record.id, "w1").run() == "succeeded"
    assert proxy.lost == 1, backend.calls
    done = store.get(record.id)
    assert [(a.number, a.call_id, a.outcome) for a in done.attempts] == [(1, "call-1", Outcome.succeeded)]
    assert backend.count("launch") == 1 and backend.count("announced") == 0, backend.calls


def test_a_write_from_the_record_last_written_is_one_round_trip_while_an_attempt_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running attempt's GPU-seconds move with the clock. The key must not hold them, or every
    write decided from the record last written (a progress note, the call's id) finds the key
    changed and goes twice."""
    record = producer.submit(store.conn, JobSpec(team="alpha", model="d4", backend="sim", run_name="running")).record
    running = store.update(record.id, lambda r: r.attempts.append(Attempt(number=1, backend="sim", gpu_count=8)))
    time.sleep(0.05)
    assert running.gpu_seconds > 0.3  # 8 GPUs, for 0.05 s at least
    sent = commands_sent(monkeypatch)
    noted = store.update(record.id, lambda r: setattr(r, "error", "a note"), seen=running)
    assert len(sent) == 1
    assert store.get(record.id) == noted and noted.error == "a note" and noted.attempts == running.attempts


@dataclass
class SlowRef(Scripted):
    """Pins the ref in `seconds` (git ls-remote, or a Modal function), after `meanwhile`."""

    seconds: float = 3.0
    meanwhile: Callable[[], object] = lambda: None
    pinned: bool = False

    def resolve_ref(self, ref: str, repo: str = "") -> str:
        self.meanwhile()
        time.sleep(self.seconds)
        self.pinned = True
        return super().resolve_ref(ref, repo)


def test_a_slow_ref_resolution_keeps_the_lease_and_the_reaper_leaves_the_job(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinning may take as long as a lease: the lease is renewed meanwhile, so no reaper
    re-queues the job for another worker."""
    monkeypatch.setenv("SPEEDQ_HEARTBEAT_TTL", "1")
    reaped: list[list[str]] = []

    class Reaped(SlowRef):
        def resolve_ref(self, ref: str, repo: str = "") -> str:
            commit = super().resolve_ref(ref, repo)  # three leases
            reaped.append(reap(store.conn))
            return commit

    backend = Reaped()
    record = supervise(store, backend, monkeypatch)
    assert reaped == [[]]
    assert backend.count("launch") == 1 and record.state == JobState.succeeded


def test_a_lease_taken_while_pinning_the_ref_stops_at_once_with_nothing_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPEEDQ_HEARTBEAT_TTL", "1")
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim"))
    # w1 stalled; w2 took the job
    backend = SlowRef(meanwhile=lambda: store.conn.set(Keys.supervisor(record.id), "w2", px=60_000))
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    worker.Supervisor(store, record.id, "w1").run()
    assert not backend.pinned  # it stopped at its next renewal, not once the ref was pinned
    after = store.get(record.id)
    assert backend.count("launch") == 0 and after.attempts == [] and after.state == JobState.queued
    assert store.conn.get(Keys.supervisor(record.id)) == b"w2"


def test_a_ref_resolution_that_hangs_fails_the_job_in_one_line(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "RESOLVE_TIMEOUT_S", 0.5)
    record = supervise(store, SlowRef(seconds=30), monkeypatch)
    assert record.state == JobState.failed and record.attempts == []
    assert record.error == f"pinning nanochat ref {record.spec.repo_ref!r} took over 0.5s"
