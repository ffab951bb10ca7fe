"""The Modal backend: spawn the deployed app's function, poll its FunctionCall, read the Volume.

This is the thin code at the SDK boundary. `import modal` is slow (0.5-1.6 s), so it happens only
inside the methods below, never at module import: `speedq status` and `speedq ls` stay fast.

Every call that may touch the network goes through `_bounded`, which awaits the SDK's `.aio` twin
under `asyncio.wait_for`: a Modal client with no route to the service otherwise hangs for about a
minute (see /work/shared/modal-facts.md). A call that runs past the bound raises BackendError.

Only a call's own result is an outcome. A poll that fails on the way (any gRPC status the client
raises, a timeout, a reset connection) says nothing about the call, which may still run: poll then
raises BackendError and the supervisor keeps watching (it bounds how long). A spawn whose answer
never came raises LaunchUnknown: the call may exist, and the supervisor reconciles it through the
container's announcement in the run directory (`announced`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any, TypeVar

from speedq import config, settings
from speedq.backends.base import BackendError, CallStatus, for_attempt
from speedq.backends.modal_calls import has_credentials as has_credentials  # the CLI's and tests' name
from speedq.backends.modal_calls import resolve_locally, run_sync
from speedq.backends.modal_data import data_marker_relpath, marker_covers, shards_for
from speedq.backends.modal_outcomes import (
    is_transport,
    one_line,
    raised_by_the_call,
    status_from_error,
    status_from_value,
)
from speedq.backends.modal_volume import VolumeFiles, volume_relpath
from speedq.schemas import JobRecord, Outcome, RunRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


# Function names in the deployed app (speedq/gpu/modal_app.py defines them).
FULL_FUNCTION = "run_speedrun"
SMOKE_FUNCTION = "test_10_steps"
RESOLVE_FUNCTION = "resolve_ref"
PREPARE_FUNCTION = "prepare_data"

# The deployed functions' own timeouts (speedq/gpu/modal_app.py uses these): with_options replaces
# a function's timeout, so a smoke job never gets more than the smoke function's own.
SMOKE_TIMEOUT_S = 2 * 3600  # compile and first data download included
PREPARE_TIMEOUT_S = 4 * 3600
PREPARE_POLL_EVERY_S = 5.0
# How long prepare keeps polling through transport errors before it gives up (the call runs on).
PREPARE_BLIND_LIMIT_S = 600.0


def call_timeout_s() -> float:
    """The bound on any one network call to Modal (SPEEDQ_MODAL_CALL_TIMEOUT, seconds)."""
    return settings.get().modal_call_timeout


def function_for(mode: str) -> str:
    return SMOKE_FUNCTION if mode == "smoke" else FULL_FUNCTION


class LaunchUnknown(BackendError):
    """The spawn was sent but its answer never came: a call may exist and run, unwatched.

    Not a launch failure: the supervisor asks `announced(record, attempt)` for the call id the
    container wrote into the run directory, and adopts or fences that call before any new launch.
    """


def attempt_timeout_for(mode: str, job_timeout_s: int) -> int:
    """The timeout the GPU call gets: the job's, but never more than a smoke function's own."""
    return min(job_timeout_s, SMOKE_TIMEOUT_S) if mode == "smoke" else job_timeout_s


class ModalBackend(VolumeFiles):
    """Launch attempts as calls of the deployed Modal app; see speedq/backends/base.py."""

    name = "modal"
    prepares_data = True  # onto the Volume, on a CPU container, before any GPU is spawned

    def __init__(
        self,
        app_name: str | None = None,
        volume_name: str | None = None,
        environment_name: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.app_name = app_name or settings.get().modal_app
        self.volume_name = volume_name or settings.get().modal_volume
        self.environment_name = environment_name or os.environ.get("MODAL_ENVIRONMENT") or None
        self.timeout_s = timeout_s if timeout_s is not None else call_timeout_s()

    # -- plumbing ------------------------------------------------------------------------------

    def _bounded(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Await one SDK call within the bound; transport and auth errors -> BackendError.

        Other exceptions (the called function's own, NotFoundError, ...) pass through to the caller,
        which knows what they mean there.
        """
        import modal.exception as mexc

        try:
            return run_sync(make, self.timeout_s)
        except TimeoutError as exc:  # asyncio.wait_for's, i.e. ours (callers catch .get's inside)
            raise BackendError(
                f"Modal did not answer {what} within {self.timeout_s:g}s (no route to Modal's API?)"
            ) from exc
        except mexc.AuthError as exc:
            raise BackendError(f"Modal rejected the credentials during {what}: {one_line(exc)}") from exc
        except Exception as exc:
            if is_transport(exc) and not raised_by_the_call(exc):
                raise BackendError(
                    f"Modal's API failed during {what} ({type(exc).__name__}): {one_line(exc)}"
                ) from exc
            raise

    def _function(self, function_name: str) -> Any:
        import modal

        return modal.Function.from_name(
            self.app_name, function_name, environment_name=self.environment_name
        )

    def _volume(self) -> Any:
        import modal

        return modal.Volume.from_name(self.volume_name, environment_name=self.environment_name)

    # -- Backend -------------------------------------------------------------------------------

    def check(self) -> None:
        if not has_credentials():
            raise BackendError(
                "no Modal credentials: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET "
                "or run `modal token set` (writes ~/.modal.toml)"
            )
        import modal.exception as mexc

        fn = self._function(FULL_FUNCTION)
        try:
            self._bounded("the deployment check", lambda: fn.hydrate.aio())
        except mexc.NotFoundError as exc:
            raise BackendError(
                f"Modal app {self.app_name!r} (function {FULL_FUNCTION!r}) is not deployed"
                f"{self._env_words()}: run `modal deploy speedq/gpu/modal_app.py`"
            ) from exc
        except mexc.Error as exc:
            raise BackendError(f"Modal deployment check failed: {one_line(exc)}") from exc

    def resolve_ref(self, ref: str, repo: str = config.NANOCHAT_REPO_URL) -> str:
        """Pin a ref with `git ls-remote` here when git exists (no container, no cost, ~1 s);
        otherwise with the app's CPU function `resolve_ref`. Both are bounded."""
        if shutil.which("git"):
            return resolve_locally(repo, ref)
        import modal.exception as mexc

        fn = self._function(RESOLVE_FUNCTION)
        try:
            commit: str = self._bounded(  # the function's return (modal's calls are untyped)
                "resolving the ref", lambda: fn.remote.aio(repo, ref)
            )
            return commit
        except mexc.Error as exc:
            raise BackendError(f"cannot resolve nanochat ref {ref!r} on Modal: {one_line(exc)}") from exc
        except Exception as exc:  # the function's own error, e.g. unknown ref
            raise BackendError(f"cannot resolve nanochat ref {ref!r}: {one_line(exc)}") from exc

    def run_dir(self, record: JobRecord) -> str:
        return str(PurePosixPath(config.MODAL_VOLUME_MOUNT) / volume_relpath(record))

    def request(self, record: JobRecord, attempt: int) -> RunRequest:
        """The RunRequest the container gets, with the container's paths under the Volume mount."""
        return for_attempt(record, attempt, self.run_request(record, attempt))

    def run_request(self, record: JobRecord, attempt: int) -> RunRequest:
        """The job's own run (not its preflight)."""
        spec = record.spec
        mount = PurePosixPath(config.MODAL_VOLUME_MOUNT)
        return RunRequest(
            job_id=record.id,
            attempt=attempt,
            model=spec.model,
            mode=spec.mode,
            nproc=spec.gpu.count,
            gpu_type=spec.gpu.type,
            commit=record.nanochat_commit or spec.repo_ref,
            repo=spec.repo,
            run_dir=self.run_dir(record),
            data_dir=str(mount / "data"),
            cache_dir=str(mount / "cache"),
            launcher="torchrun",
            save_every=spec.save_every,
            force_restart=spec.force_restart,
            train_args=dict(spec.train_args),
        )

    def _bound_function(self, function_name: str, **options: Any) -> Any:
        """The function with per-call options, bound now: a failure here launched nothing."""
        import modal.exception as mexc

        fn = self._function(function_name)
        if options:
            fn = fn.with_options(**options)
        try:
            self._bounded(f"looking up {function_name}", lambda: fn.hydrate.aio())
        except mexc.NotFoundError as exc:
            raise BackendError(
                f"Modal app {self.app_name!r} has no function {function_name!r}"
                f"{self._env_words()}: run `modal deploy speedq/gpu/modal_app.py`"
            ) from exc
        except mexc.Error as exc:
            raise BackendError(f"Modal refused {function_name}: {one_line(exc)}") from exc
        return fn

    def _spawn(self, fn: Any, what: str, **kwargs: Any) -> str:
        """Spawn and return the call id. Once the request is sent, a lost answer is LaunchUnknown."""
        import modal.exception as mexc

        refused = (mexc.InvalidError, mexc.AuthError, mexc.PermissionDeniedError, mexc.NotFoundError,
                   mexc.SerializationError, mexc.RequestSizeError, mexc.UnimplementedError)
        try:
            call = run_sync(lambda: fn.spawn.aio(**kwargs), self.timeout_s)
        except refused as exc:  # the server said no: nothing was created
            raise BackendError(f"Modal refused {what}: {one_line(exc)}") from exc
        except Exception as exc:  # no answer, a reset, UNAVAILABLE after retries: a call may exist
            raise LaunchUnknown(
                f"the answer to {what} was lost ({self._why(exc)}); the call may be running"
            ) from exc
        call_id: str = call.object_id  # a modal.FunctionCall (spawn.aio is untyped)
        return call_id

    def launch(self, record: JobRecord, attempt: int) -> str:
        spec = record.spec
        req = self.request(record, attempt)
        payload = req.model_dump_json()
        # A preflight is a short run on one GPU: the smoke function, with its timeout bound.
        mode = "smoke" if req.preflight_steps else spec.mode
        timeout = attempt_timeout_for(mode, spec.attempt_timeout_s)
        gpu = f"{spec.gpu.type}:{req.nproc}"
        fn = self._bound_function(function_for(mode), gpu=gpu, timeout=timeout)
        return self._spawn(fn, f"the launch of attempt {attempt}", request=payload)

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        """The call's own result, or running; BackendError when the poll itself failed."""
        import modal

        fc = modal.FunctionCall.from_id(call_id)
        running = object()

        async def get() -> Any:
            try:
                return await fc.get.aio(timeout=0)
            except TimeoutError:  # the built-in one: not finished yet (Modal's are not built-in)
                return running

        try:
            value = run_sync(get, self.timeout_s)
        except Exception as exc:
            status = status_from_error(exc, call_id)
            if status is None:
                raise BackendError(f"poll of {call_id} failed ({self._why(exc)}); the call may still run") from exc
            return status
        if value is running:
            return CallStatus()
        return status_from_value(value)

    def cancel(self, call_id: str) -> None:
        """Ask Modal to end the call and kill its containers. A request: poll says when it ended."""
        import modal
        import modal.exception as mexc

        fc = modal.FunctionCall.from_id(call_id)
        try:
            self._bounded("cancelling the call", lambda: fc.cancel.aio(terminate_containers=True))
        except (mexc.NotFoundError, mexc.OutputExpiredError):
            return  # nothing left to stop
        except mexc.Error as exc:
            raise BackendError(f"Modal refused to cancel {call_id}: {one_line(exc)}") from exc

    def prepare(self, record: JobRecord) -> None:
        """Dataset shards and tokenizer for the job's commit onto the Volume, on a CPU container,
        before any GPU is spawned. Returns when the data marker covers the job; BackendError if not.

        The supervisor holds a Redis lock keyed by (commit, shards) around this, so one worker
        prepares while the others wait.
        """
        req = self.run_request(record, 1)  # the full run's data, which covers its preflight's
        commit, shards = req.commit, shards_for(req)
        if marker_covers(self._read(str(data_marker_relpath(commit))), commit, shards):
            return
        payload = req.model_dump_json()
        fn = self._bound_function(PREPARE_FUNCTION)
        call_id = self._spawn(fn, f"data preparation for {commit[:12]}", request=payload)
        log.info("preparing data for %s (%d shards) on Modal: call %s", commit[:12], shards, call_id)
        status = self.wait(record, call_id, PREPARE_TIMEOUT_S + 600)
        if status.outcome is not Outcome.succeeded:
            ended = status.outcome.value if status.outcome is not None else "without an outcome"
            raise BackendError(f"data preparation {call_id} ended {ended}: {status.error}")
        if not marker_covers(self._read(str(data_marker_relpath(commit))), commit, shards):
            raise BackendError(f"data preparation {call_id} succeeded but the Volume's marker does not cover "
                               f"{shards} shards of {commit[:12]}")

    def wait(self, record: JobRecord, call_id: str, limit_s: float,
             every_s: float | None = None, blind_limit_s: float | None = None) -> CallStatus:
        """Poll until the call ends. Transport errors are waited out up to `blind_limit_s` without a
        good poll (then BackendError; the call may run on). Past `limit_s` it is cancelled."""
        every = PREPARE_POLL_EVERY_S if every_s is None else every_s
        blind = PREPARE_BLIND_LIMIT_S if blind_limit_s is None else blind_limit_s
        started = last_good = time.monotonic()
        while True:
            try:
                status = self.poll(record, call_id)
                last_good = time.monotonic()
            except BackendError as exc:
                if time.monotonic() - last_good > blind:
                    raise BackendError(f"no good poll of {call_id} for {blind:g}s: {exc}") from exc
                log.warning("%s (waiting it out)", exc)
                status = CallStatus()
            if not status.running:
                return status
            if time.monotonic() - started > limit_s:
                self.cancel(call_id)
                raise BackendError(f"{call_id} ran past {limit_s:g}s; cancelled")
            time.sleep(every)

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {self.timeout_s:g}s"
        return f"{type(exc).__name__}: {one_line(exc)}"

    def _env_words(self) -> str:
        return f" in environment {self.environment_name!r}" if self.environment_name else ""
