"""The supervisor's decisions, without Redis or a backend: what it does for each record, poll and time."""

from __future__ import annotations

from speedq.backends.base import CallStatus
from speedq.schemas import Attempt, JobRecord, JobSpec, JobState, Outcome, Progress, RunResult
from speedq.supervision import Bounds, Kind, Watch, after_attempt, next_step, observe, reconcile, verdict

BOUNDS = Bounds(stall_s=600, poll_failure_s=120, stop_confirm_s=60, announce_s=300)
T0 = 1_000_000.0


def record(*attempts: Attempt, **fields) -> JobRecord:
    spec = JobSpec(team="alpha", model="d4", backend="sim", max_attempts=3, attempt_timeout_s=3600)
    return JobRecord(id="sq-1", spec=spec, attempts=list(attempts), **fields)


def attempt(number: int = 1, call_id: str | None = "call-1", outcome: Outcome | None = None) -> Attempt:
    return Attempt(number=number, backend="sim", call_id=call_id, outcome=outcome, started_at=T0)


def test_a_new_job_launches_and_a_running_one_is_watched() -> None:
    assert next_step(record()).kind is Kind.launch
    step = next_step(record(attempt()))
    assert (step.kind, step.attempt, step.call_id) == (Kind.watch, 1, "call-1")


def test_an_attempt_without_a_call_id_is_reconciled_not_written_off() -> None:
    step = next_step(record(attempt(call_id=None)))
    assert (step.kind, step.attempt) == (Kind.reconcile, 1)


def test_reconcile_adopts_the_announced_call() -> None:
    step = reconcile(attempt(call_id=None), "123@456:/runs/alpha/d4", T0 + 5, BOUNDS)
    assert (step.kind, step.call_id) == (Kind.adopt, "123@456:/runs/alpha/d4")


def test_reconcile_waits_for_the_announcement_then_fences_off() -> None:
    assert reconcile(attempt(call_id=None), None, T0 + 299, BOUNDS).kind is Kind.wait
    late = reconcile(attempt(call_id=None), None, T0 + 300, BOUNDS)
    assert late.kind is Kind.fence_off and "fenced off" in late.error
    # an announcement that comes after the bound is still adopted: the call is known to run
    assert reconcile(attempt(call_id=None), "c", T0 + 10_000, BOUNDS).kind is Kind.adopt


def test_a_failed_poll_keeps_watching_until_the_bound_then_stops_as_lost() -> None:
    rec = record(attempt())
    watch = Watch(last_activity=T0)
    watch = observe(watch, polled=False, progress=None, now=T0 + 1)
    assert verdict(rec, 1, None, watch, T0 + 1, BOUNDS).status is None
    assert verdict(rec, 1, None, watch, T0 + 120, BOUNDS).status is None
    lost = verdict(rec, 1, None, watch, T0 + 121, BOUNDS)
    assert lost.stop and lost.status.outcome is Outcome.lost


def test_a_poll_that_answers_again_resets_the_failure_clock() -> None:
    rec = record(attempt())
    watch = observe(Watch(last_activity=T0), polled=False, progress=None, now=T0)
    watch = observe(watch, polled=True, progress=None, now=T0 + 100)
    watch = observe(watch, polled=False, progress=None, now=T0 + 110)
    assert verdict(rec, 1, None, watch, T0 + 200, BOUNDS).status is None


def test_only_the_calls_own_result_ends_an_attempt_without_a_stop() -> None:
    rec = record(attempt())
    watch = Watch(last_activity=T0)
    result = RunResult(job_id="sq-1", attempt=1, outcome=Outcome.preempted)
    ended = verdict(rec, 1, CallStatus(Outcome.preempted, None, result), watch, T0 + 1, BOUNDS)
    assert ended.status.outcome is Outcome.preempted and not ended.stop
    assert verdict(rec, 1, CallStatus(), watch, T0 + 1, BOUNDS).status is None


def test_cancel_timeout_and_stall_stop_the_call_first() -> None:
    watch = Watch(last_activity=T0)
    cancelled = verdict(record(attempt(), cancel_requested=True), 1, CallStatus(), watch, T0 + 1, BOUNDS)
    assert cancelled.stop and cancelled.status.outcome is Outcome.cancelled
    late = observe(watch, True, Progress(step=9), T0 + 3600)
    timed = verdict(record(attempt()), 1, CallStatus(), late, T0 + 3601, BOUNDS)
    assert timed.stop and timed.status.outcome is Outcome.timed_out
    stalled = verdict(record(attempt()), 1, CallStatus(), watch, T0 + 601, BOUNDS)
    assert stalled.stop and stalled.status.outcome is Outcome.stalled


def test_progress_is_activity_but_a_rewritten_file_is_not() -> None:
    watch = observe(Watch(last_activity=T0), True, Progress(stage="base_train", step=5), T0 + 10)
    assert watch.last_activity == T0 + 10
    again = observe(watch, True, Progress(stage="base_train", step=5), T0 + 500)
    assert again.last_activity == T0 + 10


def test_after_an_attempt() -> None:
    def ended(outcome: Outcome, *attempts: Attempt, **fields) -> Kind:
        return after_attempt(record(*attempts, **fields), CallStatus(outcome, "why")).kind

    assert ended(Outcome.succeeded, attempt(outcome=Outcome.succeeded)) is Kind.finish
    assert ended(Outcome.preempted, attempt(outcome=Outcome.preempted)) is Kind.retry
    assert ended(Outcome.lost, attempt(outcome=Outcome.lost)) is Kind.retry
    assert ended(Outcome.fenced, attempt(outcome=Outcome.fenced)) is Kind.finish  # not retryable
    three = [attempt(n, outcome=Outcome.crashed) for n in (1, 2, 3)]
    assert ended(Outcome.crashed, *three) is Kind.launch  # next_step gives up, saying why
    gave_up = next_step(record(*three))
    assert (gave_up.kind, gave_up.state) == (Kind.finish, JobState.failed) and "gave up after 3" in gave_up.error
    cancelled = record(attempt(outcome=Outcome.preempted), cancel_requested=True)
    step = after_attempt(cancelled, CallStatus(Outcome.preempted))
    assert (step.kind, step.state) == (Kind.finish, JobState.cancelled)


# -- the preflight (issue 12) ----------------------------------------------------------------------


def preflight_attempt(number: int, outcome: Outcome | None) -> Attempt:
    return Attempt(number=number, backend="sim", call_id=f"call-{number}", outcome=outcome, started_at=T0,
                   gpu_count=1, preflight=True)


def test_a_full_multi_gpu_job_launches_its_preflight_first() -> None:
    from speedq.supervision import Launch

    assert next_step(record()) == Launch(preflight=True)


def test_a_pass_is_remembered_for_its_commit_and_a_worker_taking_over_launches_the_full_run() -> None:
    from speedq.schemas import PreflightState, PreflightStatus
    from speedq.supervision import Launch

    passed = PreflightStatus(state=PreflightState.passed, steps=20, gpu="H100:1", commit="c" * 40)
    done = record(preflight_attempt(1, Outcome.succeeded), preflight=passed, nanochat_commit="c" * 40)
    assert next_step(done) == Launch(preflight=False)
    other_commit = done.model_copy(update={"nanochat_commit": "d" * 40})
    assert next_step(other_commit) == Launch(preflight=True)


def test_a_retry_after_a_failed_preflight_runs_it_again_but_not_after_the_full_run_began() -> None:
    from speedq.schemas import PreflightState, PreflightStatus
    from speedq.supervision import Launch

    failed = PreflightStatus(state=PreflightState.failed, steps=20, gpu="H100:1", commit="c" * 40)
    again = record(preflight_attempt(1, Outcome.crashed), preflight=failed, nanochat_commit="c" * 40, round_start=1)
    assert next_step(again) == Launch(preflight=True)
    began = record(attempt(outcome=Outcome.crashed), round_start=1)  # a record from before preflights
    assert next_step(began) == Launch(preflight=False)


def test_a_preflight_crash_fails_the_job_a_preemption_retries_it() -> None:
    from speedq.supervision import Retry

    crashed = record(preflight_attempt(1, Outcome.crashed))
    assert after_attempt(crashed, CallStatus(Outcome.crashed, "boom")).kind is Kind.finish
    preempted = record(preflight_attempt(1, Outcome.preempted))
    assert after_attempt(preempted, CallStatus(Outcome.preempted, "gone")) == Retry()
    thrice = record(*(preflight_attempt(n, Outcome.preempted) for n in (1, 2, 3)))
    step = next_step(thrice)
    assert step.kind is Kind.finish and "gave up after 3 preflight attempts" in step.error
