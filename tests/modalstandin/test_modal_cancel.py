"""Cancelling a Modal call, and what the supervisor does around it: a cancel counts only once it
has taken effect, and the next attempt (or a new worker reattaching by id) never makes a second
live call.

Against the stand-in of Modal's control plane (conftest.py); the tests end by asking it how many
calls are not ended (`Watch` records the most seen at any moment).
"""

from __future__ import annotations

import time

from speedq.backends import modal as mb
from speedq.schemas import Outcome
from tests.modalstandin.conftest import Watch, record, run_result


def test_cancel_terminates_containers_and_polls_as_cancelled(standin, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    backend.cancel(call_id)
    [call] = standin.calls()
    assert call["cancelled"] and call["terminate_containers"]
    assert backend.poll(rec, call_id).outcome is Outcome.cancelled


def test_a_slow_cancel_is_running_until_it_has_taken_effect(standin, backend) -> None:
    """The supervisor's way: cancel, poll until ended, only then launch the next attempt."""
    rec = record()
    watch = Watch(standin)
    standin.fault(cancel_delay_s=4)  # room for the poll and the look below on a loaded machine
    first = backend.launch(rec, 1)
    backend.cancel(first)
    assert backend.poll(rec, first).running  # requested, not yet done
    assert watch.look() == [first]
    deadline = time.monotonic() + 20
    while backend.poll(rec, first).running:
        assert time.monotonic() < deadline
        watch.look()
        time.sleep(0.1)
    assert backend.poll(rec, first).outcome is Outcome.cancelled
    second = backend.launch(rec, 2)
    assert watch.look() == [second] and watch.most == 1


def test_cancel_of_an_unknown_call_is_quiet(standin, backend) -> None:
    backend.cancel("fc-gone")


def test_an_expired_output_is_lost_and_the_next_attempt_is_the_only_live_call(standin, backend) -> None:
    rec = record()
    watch = Watch(standin)
    first = backend.launch(rec, 1)
    standin.finish(first, "expired")
    assert backend.poll(rec, first).outcome is Outcome.lost
    backend.cancel(first)  # what the supervisor does before any relaunch: harmless here
    second = backend.launch(rec, 2)
    assert watch.look() == [second] and watch.most == 1


def test_a_new_backend_reattaches_by_id_without_a_second_spawn(standin, backend) -> None:
    rec = record()
    call_id = backend.launch(rec, 1)
    other = mb.ModalBackend(timeout_s=3.0)  # a new worker process, knowing only the stored id
    assert other.poll(rec, call_id).running
    standin.finish(call_id, "success", run_result(Outcome.succeeded))
    assert other.poll(rec, call_id).outcome is Outcome.succeeded
    assert len(standin.calls()) == 1
