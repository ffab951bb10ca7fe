"""The worker's loop around the decisions, in-process against a real Redis, with a scripted
backend that fails the way issue 10 lists: poll errors, a launch whose answer is lost, a cancel
that takes a while, a lease taken over during backoff. Each call the loop makes is recorded, so
the tests check the order a GPU bill depends on (a cancel confirmed before the next launch)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from speedq import producer, worker
from speedq.backends.base import BackendError, CallStatus, LaunchUnknown
from speedq.schemas import Attempt, JobRecord, JobSpec, JobState, ListQuery, LogPointer, Outcome
from speedq.store import Keys, Store
from tests.conftest import RedisServer, wait_for


@dataclass
class Scripted:
    """A backend whose calls follow the test's script; `calls` records what the loop did."""

    name: str = "sim"
    prepares_data: bool = True  # as Modal's: `prepare` runs under the data lock
    calls: list[tuple[str, ...]] = field(default_factory=list)
    launch_script: list[Callable[[int], str]] = field(default_factory=list)
    poll_script: Callable[[str, int], CallStatus] = lambda call_id, n: CallStatus(Outcome.succeeded)
    announce_script: Callable[[int, int], str | None] = lambda attempt, n: None
    ended: set[str] = field(default_factory=set)

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c[0] == kind)

    def resolve_ref(self, ref: str, repo: str = "") -> str:
        return "c" * 40

    def run_dir(self, record: JobRecord) -> str:
        return "/nowhere/run"

    def log_pointer(self, record: JobRecord) -> LogPointer:
        return LogPointer(location="local", path="/nowhere/log.txt", command="true")

    def prepare(self, record: JobRecord) -> None:
        self.calls.append(("prepare",))

    def launch(self, record: JobRecord, attempt: int) -> str:
        self.calls.append(("launch", str(attempt)))
        return self.launch_script.pop(0)(attempt) if self.launch_script else f"call-{attempt}"

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        self.calls.append(("announced", str(attempt)))
        return self.announce_script(attempt, self.count("announced"))

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        self.calls.append(("poll", call_id))
        if call_id in self.ended:
            return CallStatus(Outcome.cancelled, "ended by cancel")
        return self.poll_script(call_id, self.count("poll"))

    def cancel(self, call_id: str) -> None:
        self.calls.append(("cancel", call_id))
        self.ended.add(call_id)

    def read_progress(self, record: JobRecord):
        return None


@pytest.fixture
def store(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Store:
    redis_server.client().flushall()
    for name, value in {"SPEEDQ_POLL_INTERVAL": "0.02", "SPEEDQ_RETRY_BACKOFF": "0.05", "SPEEDQ_HEARTBEAT_TTL": "5",
                        "SPEEDQ_POLL_FAILURE_BOUND": "0.3", "SPEEDQ_STOP_CONFIRM_TIMEOUT": "0.3",
                        "SPEEDQ_ANNOUNCE_TIMEOUT": "0.3"}.items():
        monkeypatch.setenv(name, value)
    return Store(redis_server.client())


def supervise(store: Store, backend: Scripted, monkeypatch: pytest.MonkeyPatch, **spec: object) -> JobRecord:
    spec.setdefault("preflight", False)  # these scripts are of the full run's calls; preflights below
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim", **spec))
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    worker.Supervisor(store, record.id, "w1").run()
    return store.get(record.id)


def test_poll_errors_keep_watching_and_only_the_result_ends_it(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def poll(call_id: str, n: int) -> CallStatus:
        if n <= 5:
            raise BackendError("StatusCode.UNAVAILABLE")
        return CallStatus(Outcome.succeeded)

    backend = Scripted(poll_script=poll)
    record = supervise(store, backend, monkeypatch)
    assert record.state.value == "succeeded"
    assert backend.count("launch") == 1 and backend.count("cancel") == 0


def test_a_call_silent_past_the_bound_is_cancelled_and_confirmed_before_the_next_launch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def poll(call_id: str, n: int) -> CallStatus:
        if call_id == "call-1":
            raise BackendError("StatusCode.INTERNAL")
        return CallStatus(Outcome.succeeded)

    backend = Scripted(poll_script=poll)
    record = supervise(store, backend, monkeypatch)
    assert record.state.value == "succeeded"
    assert [a.outcome for a in record.attempts] == [Outcome.lost, Outcome.succeeded]
    assert backend.calls.index(("cancel", "call-1")) < backend.calls.index(("launch", "2"))
    confirmed = backend.calls.index(("poll", "call-1"), backend.calls.index(("cancel", "call-1")))
    assert confirmed < backend.calls.index(("launch", "2"))  # a poll saw it ended first


def test_a_stop_that_is_never_confirmed_waits_out_its_bound(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    class Stubborn(Scripted):
        def cancel(self, call_id: str) -> None:
            self.calls.append(("cancel", call_id))  # requested, never takes effect

    def poll(call_id: str, n: int) -> CallStatus:
        return CallStatus() if call_id == "call-1" else CallStatus(Outcome.succeeded)

    backend = Stubborn(poll_script=poll)
    record = supervise(store, backend, monkeypatch, attempt_timeout_s=1)
    assert [a.outcome for a in record.attempts][:1] == [Outcome.timed_out]
    assert "not confirmed ended" in (record.attempts[0].error or "")
    assert backend.calls.index(("cancel", "call-1")) < backend.calls.index(("launch", "2"))


def test_a_launch_with_an_unknown_outcome_is_adopted_from_its_announcement(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost_answer(attempt: int) -> str:
        raise LaunchUnknown("spawn timed out")

    backend = Scripted(launch_script=[lost_answer], announce_script=lambda attempt, n: "fc-real" if n >= 3 else None)
    record = supervise(store, backend, monkeypatch)
    assert record.state.value == "succeeded"
    assert backend.count("launch") == 1
    assert [a.call_id for a in record.attempts] == ["fc-real"]


def test_a_launch_never_announced_is_fenced_off_then_relaunched(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost_answer(attempt: int) -> str:
        raise LaunchUnknown("spawn timed out")

    backend = Scripted(launch_script=[lost_answer])
    record = supervise(store, backend, monkeypatch)
    assert record.state.value == "succeeded"
    assert [a.outcome for a in record.attempts] == [Outcome.lost, Outcome.succeeded]
    assert "fenced off" in record.attempts[0].error
    last_look = max(i for i, c in enumerate(backend.calls) if c == ("announced", "1"))
    assert last_look < backend.calls.index(("launch", "2"))  # looked again right before relaunching


def test_a_lease_lost_during_backoff_stops_at_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_RETRY_BACKOFF", "120")  # far longer than the test waits for it
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim", preflight=False))

    def take_over_in_backoff() -> None:
        wait_for(lambda: store.get(record.id).state.value == "retrying", timeout=10, what="the backoff")
        store.conn.set(Keys.supervisor(record.id), "w2", px=60_000)  # another worker took the job

    thief = threading.Thread(target=take_over_in_backoff)
    thief.start()
    backend = Scripted(poll_script=lambda call_id, n: CallStatus(Outcome.preempted, "gone"))
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    supervisor = threading.Thread(target=worker.Supervisor(store, record.id, "w1").run, daemon=True)
    supervisor.start()
    thief.join()
    supervisor.join(timeout=30)
    assert not supervisor.is_alive()  # it stopped in its backoff instead of sleeping it out
    assert backend.count("launch") == 1  # w1 never launched again
    assert store.conn.get(Keys.supervisor(record.id)) == b"w2"


def test_prepare_runs_before_every_launch_under_the_data_lock(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    class Watching(Scripted):
        def prepare(self, record: JobRecord) -> None:
            super().prepare(record)
            seen.append(bool(store.conn.keys(Keys.data_prep("*", 0).rsplit(":", 2)[0] + ":*")))

    backend = Watching()
    supervise(store, backend, monkeypatch)
    assert backend.calls.index(("prepare",)) < backend.calls.index(("launch", "1"))
    assert seen == [True]


def test_a_lease_taken_while_preparing_stops_before_the_attempt_is_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim"))

    class Overtaken(Scripted):
        def prepare(self, record: JobRecord) -> None:
            super().prepare(record)
            store.conn.set(Keys.supervisor(record.id), "w2", px=60_000)  # w1 stalled; w2 took the job

    backend = Overtaken()
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    worker.Supervisor(store, record.id, "w1").run()
    after = store.get(record.id)
    assert backend.count("launch") == 0
    assert after.attempts == [] and after.state.value == "starting"  # the lease check wrote nothing
    assert store.conn.get(Keys.supervisor(record.id)) == b"w2"


@pytest.mark.parametrize(("prepares_data", "round_trips"), [(False, 2), (True, 5)])
def test_from_the_work_horse_to_the_launch_is_two_round_trips_or_five_with_data_to_prepare(
    store: Store, monkeypatch: pytest.MonkeyPatch, prepares_data: bool, round_trips: int
) -> None:
    """Take the lease and read the record and its team's budget (checked at a round's start);
    claim the job and write the attempt, with the lease checked and renewed. A backend with data
    to prepare (Modal) marks the job starting first, then takes and frees the data lock around
    the prepare. Each round trip costs a loaded machine milliseconds."""
    sent: list[bytes] = []
    at_launch: list[int] = []

    class Counting(Scripted):
        def launch(self, record: JobRecord, attempt: int) -> str:
            at_launch.append(len(sent))
            return super().launch(record, attempt)

    backend = Counting(prepares_data=prepares_data)
    supervise(store, backend, monkeypatch)  # loads redis-py's lock scripts into the server once
    second, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim", run_name="second"))
    at_launch.clear()
    send = redis.connection.Connection.send_packed_command

    def counted(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(command)
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
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
from tests.test_supervisor_loop import Scripted

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
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


# -- the preflight (issue 12): its attempts go through the same loop, on one GPU ---------------


def test_a_crashed_preflight_fails_the_job_and_the_full_run_never_launches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = CallStatus(Outcome.crashed, "stage base_train exited with code 1")
    backend = Scripted(poll_script=lambda call_id, n: crashed)
    record = supervise(store, backend, monkeypatch, preflight=True, gpu="H100:8")
    assert record.state.value == "failed"
    assert backend.count("launch") == 1  # the preflight alone, and it was not retried
    (only,) = record.attempts
    assert only.preflight and only.gpu_count == 1
    assert record.preflight is not None and record.preflight.state.value == "failed"
    assert record.error is not None and "preflight (20 steps on H100:1) failed" in record.error
    assert "stage base_train exited with code 1" in record.error and "log: true" in record.error


def test_a_passed_preflight_is_followed_by_the_full_run_and_counted_in_gpu_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = Scripted()
    record = supervise(store, backend, monkeypatch, preflight=True, gpu="H100:8")
    assert record.state.value == "succeeded"
    assert [(a.preflight, a.gpu_count, a.outcome) for a in record.attempts] == [
        (True, 1, Outcome.succeeded), (False, 8, Outcome.succeeded)]
    assert record.preflight is not None and record.preflight.state.value == "passed"
    assert record.preflight.commit == record.nanochat_commit
    assert record.attempts_this_round == 1  # max_attempts bounds the full run's attempts
    assert 0 < record.preflight_gpu_seconds < record.gpu_seconds
    assert not record.in_preflight


def test_a_preempted_preflight_is_retried_as_a_preflight(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Scripted(poll_script=lambda call_id, n: CallStatus(Outcome.preempted, "gone") if n == 1
                       else CallStatus(Outcome.succeeded))
    record = supervise(store, backend, monkeypatch, preflight=True, gpu="H100:8")
    assert record.state.value == "succeeded"
    assert [(a.preflight, a.outcome) for a in record.attempts] == [
        (True, Outcome.preempted), (True, Outcome.succeeded), (False, Outcome.succeeded)]


def test_no_preflight_for_one_gpu_a_smoke_test_or_when_turned_off(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, spec in enumerate(({"gpu": "H100:1"}, {"mode": "smoke"}, {"preflight": False})):
        backend = Scripted()
        record = supervise(store, backend, monkeypatch, **{"preflight": True, **spec, "run_name": f"r{n}"})
        assert record.state.value == "succeeded", spec
        assert [a.preflight for a in record.attempts] == [False], spec
        assert record.preflight is None


def test_a_cancel_during_preflight_stops_it_and_nothing_else_launches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, _ = store.create_claiming_run(JobSpec(team="alpha", model="d4", backend="sim", gpu="H100:8"))
    backend = Scripted(poll_script=lambda call_id, n: CallStatus())  # the preflight runs until stopped

    def cancel_once_running() -> None:
        wait_for(lambda: store.get(record.id).in_preflight and backend.count("poll") >= 2, timeout=10,
                 what="the preflight to run")
        store.update(record.id, lambda r: setattr(r, "cancel_requested", True))

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    monkeypatch.setattr(worker, "backend_named", lambda name: backend)
    worker.Supervisor(store, record.id, "w1").run()
    canceller.join()
    ended = store.get(record.id)
    assert ended.state.value == "cancelled"
    assert backend.calls.count(("cancel", "call-1")) == 1 and backend.count("launch") == 1
    assert ended.preflight is not None and ended.preflight.state.value == "cancelled"
    assert [(a.preflight, a.outcome) for a in ended.attempts] == [(True, Outcome.cancelled)]


def test_a_fault_in_speedq_before_a_launch_fails_the_job_in_one_line(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here, a backend that breaks resolving the ref) must not leave the job queued with
    nobody on it: the job fails with the error, its lease is given back, nothing launched."""

    class Broken(Scripted):
        def resolve_ref(self, ref: str, repo: str = "") -> str:
            raise TypeError("resolve_ref() takes 2 positional arguments but 3 were given")

    backend = Broken()
    with pytest.raises(TypeError):
        supervise(store, backend, monkeypatch)
    [record] = store.list(ListQuery())
    assert record.state.value == "failed"
    assert record.error == ("speedq failed before a launch: TypeError: "
                            "resolve_ref() takes 2 positional arguments but 3 were given")
    assert backend.count("launch") == 0 and not store.supervised(record.id)


def test_a_fault_in_speedq_with_an_attempt_in_flight_keeps_the_lease_to_expire(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a call is running, failing the job would orphan a paid GPU run: the lease is left to
    expire, so the reaper hands the job to a worker that reattaches to the call."""

    class BrokenPoll(Scripted):
        def poll(self, record: JobRecord, call_id: str) -> CallStatus:
            raise KeyError("a bug while polling")

    backend = BrokenPoll()
    with pytest.raises(KeyError):
        supervise(store, backend, monkeypatch)
    [record] = store.list(ListQuery())
    assert record.state.value == "running" and record.current_attempt is not None
    assert record.current_attempt.call_id == "call-1" and record.current_attempt.outcome is None
    assert store.supervised(record.id)  # held until it expires; the reaper takes it from there


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
