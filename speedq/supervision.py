"""The supervisor's decisions, as pure functions of (record, what the backend said, now).

speedq.worker carries them out (Redis, the backend, sleeps); everything here is testable
without either. The rules, from issue 10:
- only a call's own result ends an attempt; a failed poll means "keep watching", up to
  `poll_failure_s`, after which the call is treated as lost;
- an attempt whose call id was never stored (a worker died between launch and storing it, or the
  launch's answer never came) is reconciled through the runner's announcement: adopted, or after
  `announce_s` fenced off (the next attempt's claim of the run dir supersedes it);
- a call is stopped by a cancel that is then confirmed by polling, for up to `stop_confirm_s`
  (past that, the run-dir fence covers the rest).
And from issue 12: a full run on more than one GPU is launched only after its preflight (the
same commit and options briefly on one GPU) passed. The preflight's attempts are attempts like
any other (fenced, leased, reattached, counted), flagged `preflight`; one that crashes, stalls or
times out fails the job with its error line and log pointer, one that is preempted or lost is
retried, and a pass is remembered in `record.preflight` so no later attempt runs it again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import ClassVar

from speedq.backends.base import CallStatus
from speedq.schemas import Attempt, JobRecord, JobState, Outcome, PreflightState, PreflightStatus, Progress

BASE_TRAIN_STAGE = "base_train"


@dataclass(frozen=True)
class Bounds:
    """How long the supervisor waits on each uncertainty (seconds), from `speedq.settings`:

    SPEEDQ_STALL_TIMEOUT (2700): no new stage or step for this long ends the attempt as stalled.
    SPEEDQ_POLL_FAILURE_BOUND (900): polls failing for this long in a row (an API outage) and the
        call is treated as lost: cancelled, confirmed ended, and retried.
    SPEEDQ_STOP_CONFIRM_TIMEOUT (300): after a cancel, how long to poll for the call to end before
        launching anyway (the new attempt's claim fences the old runner off the run dir).
    SPEEDQ_ANNOUNCE_TIMEOUT (900): how long an attempt with no stored call id may go without its
        runner announcing itself before it is fenced off (a Modal cold start takes minutes).
    """

    stall_s: float = 45 * 60
    poll_failure_s: float = 900.0
    stop_confirm_s: float = 300.0
    announce_s: float = 900.0

    @classmethod
    def from_settings(cls) -> Bounds:
        from speedq import settings

        s = settings.get()
        return cls(stall_s=s.stall_timeout, poll_failure_s=s.poll_failure_bound,
                   stop_confirm_s=s.stop_confirm_timeout, announce_s=s.announce_timeout)


class Kind(str, Enum):
    finish = "finish"  # write the job's end (state, error)
    launch = "launch"  # end the previous call for sure, then start a new attempt
    reconcile = "reconcile"  # the current attempt has no call id: look for its announcement
    watch = "watch"  # poll the current attempt's call
    adopt = "adopt"  # store the announced call id as the attempt's and watch it
    wait = "wait"  # nothing to do yet: sleep, keep the lease
    fence_off = "fence_off"  # end the attempt as lost; the next attempt's claim supersedes it
    retry = "retry"  # mark the job retrying, back off, then launch


# The steps, one type each so that what a step carries is known from its type.


@dataclass(frozen=True)
class Finish:
    state: JobState
    error: str | None = None
    kind: ClassVar[Kind] = Kind.finish


@dataclass(frozen=True)
class Launch:
    preflight: bool = False  # the one-GPU preflight, not the job's own run
    kind: ClassVar[Kind] = Kind.launch


@dataclass(frozen=True)
class Reconcile:
    attempt: int
    kind: ClassVar[Kind] = Kind.reconcile


@dataclass(frozen=True)
class WatchCall:
    attempt: int
    call_id: str
    kind: ClassVar[Kind] = Kind.watch


@dataclass(frozen=True)
class Adopt:
    attempt: int
    call_id: str
    kind: ClassVar[Kind] = Kind.adopt


@dataclass(frozen=True)
class Wait:
    attempt: int
    kind: ClassVar[Kind] = Kind.wait


@dataclass(frozen=True)
class FenceOff:
    attempt: int
    error: str
    kind: ClassVar[Kind] = Kind.fence_off


@dataclass(frozen=True)
class Retry:
    kind: ClassVar[Kind] = Kind.retry


Step = Finish | Launch | Reconcile | WatchCall | Adopt | Wait | FenceOff | Retry


def next_step(record: JobRecord) -> Finish | Launch | Reconcile | WatchCall:
    """What to do with the job as stored."""
    attempt = record.current_attempt
    if attempt is None or attempt.outcome is not None:
        if record.cancel_requested:
            return Finish(JobState.cancelled, "cancelled")
        preflight = wants_preflight(record)
        done = record.preflights_this_round if preflight else record.attempts_this_round
        if done >= record.spec.max_attempts:
            why = attempt.error if attempt is not None and attempt.error else "no attempts left"
            what = "preflight attempts" if preflight else "attempts"
            return Finish(JobState.failed, f"gave up after {done} {what}: {why}")
        return Launch(preflight)
    if attempt.call_id is None:
        return Reconcile(attempt.number)
    return WatchCall(attempt.number, attempt.call_id)


def reconcile(attempt: Attempt, announced: str | None, now: float, bounds: Bounds) -> Adopt | Wait | FenceOff:
    """An attempt whose launch was never confirmed: its runner's announcement decides."""
    if announced is not None:
        return Adopt(attempt.number, announced)
    waited = now - attempt.started_at
    if waited < bounds.announce_s:
        return Wait(attempt.number)
    return FenceOff(
        attempt.number,
        f"launch outcome unknown and no runner announced itself in {waited:.0f}s; fenced off",
    )


def after_attempt(record: JobRecord, status: CallStatus) -> Finish | Launch | Retry:
    """The attempt has ended with `status` (already written to `record`): the job's next step."""
    preflight = record.is_preflight()
    if status.outcome == Outcome.succeeded:
        return Launch() if preflight else Finish(JobState.succeeded)
    if status.outcome == Outcome.cancelled or record.cancel_requested:
        return Finish(JobState.cancelled, status.error or "cancelled")
    if preflight and preflight_broken(status.outcome):
        return Finish(JobState.failed, preflight_failure(record, status.error))
    if status.outcome is None or not status.outcome.retryable:
        return Finish(JobState.failed, status.error)
    if (record.preflights_this_round if preflight else record.attempts_this_round) >= record.spec.max_attempts:
        return Launch()  # next_step says why it gives up
    return Retry()


# -- the preflight -------------------------------------------------------------------------------


def wants_preflight(record: JobRecord) -> bool:
    """The next launch is the preflight: the spec wants one (a full run on several GPUs, not
    `--no-preflight`), none has passed for this commit, and the full run has not begun (a record
    from before preflights existed, with full attempts, is not held back by one)."""
    if not record.spec.wants_preflight or any(not a.preflight for a in record.attempts):
        return False
    done = record.preflight
    return not (done is not None and done.state is PreflightState.passed and done.commit == record.nanochat_commit)


def preflight_broken(outcome: Outcome | None) -> bool:
    """The commit or options are broken: the preflight's own code crashed, hung or ran out of time
    (a retry would do the same, at N GPUs' price next). A preemption or a lost call is retried."""
    return outcome is None or outcome in (Outcome.crashed, Outcome.stalled, Outcome.timed_out) or not outcome.retryable


def preflight_failure(record: JobRecord, error: str | None) -> str:
    """The job's error when its preflight failed: what ran, its error line, where its log is."""
    done = record.preflight
    what = f"preflight ({done.steps} steps on {done.gpu})" if done is not None else "preflight"
    where = f"; log: {done.log.command}" if done is not None and done.log is not None else ""
    return f"{what} failed, the full run was not launched: {error or 'no error line'}{where}"


def begin_preflight(record: JobRecord, steps: int) -> PreflightStatus:
    """The summary a preflight attempt starts with (a retry keeps the step count it began with)."""
    before = record.preflight
    if before is not None and before.state is PreflightState.running:
        return before.model_copy(update={"commit": record.nanochat_commit})
    return PreflightStatus(steps=steps, gpu=f"{record.spec.gpu.type}:1", commit=record.nanochat_commit)


def end_preflight(record: JobRecord, number: int, status: CallStatus) -> None:
    """Fold a preflight attempt's end into `record.preflight` (inside the Store.update that ends
    the attempt, so the pass and the outcome are written together)."""
    attempt = record.attempts[number - 1]
    done = record.preflight
    if not attempt.preflight or done is None:
        return
    done.final_step = attempt.final_step
    if status.outcome is Outcome.succeeded:
        done.state, done.error = PreflightState.passed, None
        record.progress = None  # the full run reports its own from its first poll
    elif status.outcome is Outcome.cancelled or record.cancel_requested:
        done.state = PreflightState.cancelled
    elif preflight_broken(status.outcome) or record.preflights_this_round >= record.spec.max_attempts:
        done.state, done.error = PreflightState.failed, status.error


# -- watching one call ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """What a watch loop remembers between polls."""

    last_activity: float
    last_seen: tuple[str | None, int | None] = (None, None)
    failing_since: float | None = None  # first of the polls failing in a row


def observe(watch: Watch, polled: bool, progress: Progress | None, now: float) -> Watch:
    """Fold one poll into the watch. Activity is a new stage or step; the runner rewrites
    progress.json even when its training hangs, so the file's own timestamp proves nothing."""
    if polled:
        watch = replace(watch, failing_since=None)
    elif watch.failing_since is None:
        watch = replace(watch, failing_since=now)
    if progress is not None and (progress.stage, progress.step) != watch.last_seen:
        watch = replace(watch, last_seen=(progress.stage, progress.step), last_activity=now)
    return watch


@dataclass(frozen=True)
class Verdict:
    """keep (status None), ended (the call's own result), or stop (cancel, confirm, end with status)."""

    status: CallStatus | None = None
    stop: bool = False


KEEP = Verdict()


def verdict(
    record: JobRecord, number: int, status: CallStatus | None, watch: Watch, now: float, bounds: Bounds
) -> Verdict:
    """After one poll (`status` None: the poll failed): does the attempt go on?"""
    if status is not None and not status.running:
        return Verdict(status)
    if status is None and watch.failing_since is not None and now - watch.failing_since >= bounds.poll_failure_s:
        silent_s = now - watch.failing_since
        return Verdict(CallStatus(Outcome.lost, f"no answer from the backend for {silent_s:.0f}s"), stop=True)
    if record.cancel_requested:
        return Verdict(CallStatus(Outcome.cancelled, "cancelled by request"), stop=True)
    started = record.attempts[number - 1].started_at
    if now - started > record.spec.attempt_timeout_s:
        error = f"attempt ran past its {record.spec.attempt_timeout_s}s timeout"
        return Verdict(CallStatus(Outcome.timed_out, error), stop=True)
    if now - watch.last_activity > bounds.stall_s:
        return Verdict(CallStatus(Outcome.stalled, f"no progress for {bounds.stall_s:.0f}s"), stop=True)
    return KEEP


def note_progress(record: JobRecord, number: int, progress: Progress | None) -> None:
    """Copy what the runner reported into the record (inside a Store.update)."""
    if progress is None:
        return
    record.progress = progress
    current = record.attempts[number - 1]
    if progress.resumed_from_step is not None:
        current.resumed_from_step = progress.resumed_from_step
    if progress.reached_before_resume is not None and number > 1:
        before = record.attempts[number - 2]
        if before.preflight == current.preflight:  # the same run dir's log said it
            before.final_step = max(before.final_step or 0, progress.reached_before_resume)
    if progress.stage == BASE_TRAIN_STAGE and progress.step is not None:
        current.final_step = progress.step
