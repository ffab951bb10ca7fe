"""The worker's loop around the decisions, in-process against a real Redis, with a scripted
backend that fails the way issue 10 lists: poll errors, a launch whose answer is lost, a cancel
that takes a while, a lease taken over during backoff. Each call the loop makes is recorded, so
the tests check the order a GPU bill depends on (a cancel confirmed before the next launch)."""

from __future__ import annotations

import threading

import pytest

from speedq import worker
from speedq.backends.base import BackendError, CallStatus, LaunchUnknown
from speedq.schemas import JobRecord, JobSpec, ListQuery, Outcome
from speedq.store import Keys, Store
from tests.conftest import wait_for
from tests.supervision.scripted import Scripted, supervise


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
