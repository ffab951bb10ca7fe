"""What the Modal client's answers and errors say about a call: an outcome, or nothing.

Only a call's own result is an outcome. An error met on the way to Modal's API or back (any gRPC
status as the client raises it, a timeout, a reset connection) says nothing about the call, which
may still run. Imports `modal` only inside the functions (the backend module must import fast).
"""

from __future__ import annotations

import asyncio
from typing import Any

from speedq.backends.base import CallStatus
from speedq.schemas import Outcome, RunResult


def is_transport(exc: BaseException) -> bool:
    """An error on the way to Modal's API or back, which says nothing about the call itself."""
    import grpclib.exceptions
    import modal.exception as mexc

    if isinstance(exc, (mexc.NotFoundError, mexc.OutputExpiredError, FileNotFoundError)):
        return False  # answers: the thing is not there
    return isinstance(
        exc,
        (
            grpclib.exceptions.GRPCError,  # ServiceError, InternalError, ResourceExhaustedError, ...
            mexc.ConnectionError,
            mexc.ClientClosed,
            grpclib.exceptions.StreamTerminatedError,
            grpclib.exceptions.ProtocolError,
            OSError,  # ConnectionResetError, BrokenPipeError, ...
            asyncio.TimeoutError,
        ),
    )


def raised_by_the_call(exc: BaseException) -> bool:
    """Was `exc` re-raised from the call's own result (the client's _process_result), rather than
    met on the way? The function's own ConnectionResetError is an outcome; ours is not. A large
    result's download (blob_download, under _process_result) failing is ours."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_process_result":
            deeper = tb.tb_next
            return deeper is None or "blob" not in deeper.tb_frame.f_code.co_name
        tb = tb.tb_next
    return False


def status_from_error(exc: BaseException, call_id: str) -> CallStatus | None:
    """What a poll's exception says about the call; None: nothing (a transport error)."""
    import modal.exception as mexc

    if isinstance(exc, (mexc.OutputExpiredError, mexc.NotFoundError)):
        return CallStatus(Outcome.lost, f"Modal no longer knows call {call_id}: {one_line(exc)}")
    if isinstance(exc, mexc.FunctionTimeoutError):
        return CallStatus(Outcome.timed_out, one_line(exc) or "the function ran past its timeout")
    if isinstance(exc, mexc.InternalFailure):
        return CallStatus(Outcome.preempted, one_line(exc) or "Modal lost the input")
    if is_transport(exc) and not raised_by_the_call(exc):
        return None
    if isinstance(exc, mexc.RemoteError):
        # A cancelled call ends with status TERMINATED, which the client raises as a bare
        # RemoteError carrying the server's message.
        if any(word in str(exc).lower() for word in ("cancel", "terminat")):
            return CallStatus(Outcome.cancelled, one_line(exc))
        return CallStatus(Outcome.crashed, one_line(exc))
    # ExecutionError, or the function's own exception re-raised
    return CallStatus(Outcome.crashed, f"{type(exc).__name__}: {one_line(exc)}")


def status_from_value(value: Any) -> CallStatus:
    """What a finished call returned: a RunResult (as a dict, JSON or model) decides the outcome."""
    result: RunResult | None = None
    try:
        if isinstance(value, RunResult):
            result = value
        elif isinstance(value, dict):
            result = RunResult.model_validate(value)
        elif isinstance(value, (str, bytes)):
            result = RunResult.model_validate_json(value)
    except ValueError:
        result = None
    if result is None:
        return CallStatus(Outcome.succeeded)
    return CallStatus(result.outcome, result.error, result)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
