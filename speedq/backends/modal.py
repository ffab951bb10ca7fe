"""The Modal backend: spawn the deployed app's function, poll its FunctionCall, read the Volume.

This is the thin code at the SDK boundary. `import modal` is slow (0.5-1.6 s), so it happens only
inside the methods below, never at module import: `speedq status` and `speedq ls` stay fast.

Every call that may touch the network goes through `_bounded`, which awaits the SDK's `.aio` twin
under `asyncio.wait_for`: a Modal client with no route to the service otherwise hangs for about a
minute (see /work/shared/modal-facts.md). A call that runs past the bound raises BackendError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any, TypeVar

from speedq import config
from speedq.backends.base import BackendError, CallStatus
from speedq.gpu import layout
from speedq.schemas import JobRecord, LogPointer, Outcome, Progress, RunRequest, RunResult

log = logging.getLogger(__name__)

T = TypeVar("T")

# Function names in the deployed app (speedq/gpu/modal_app.py defines them).
FULL_FUNCTION = "run_speedrun"
SMOKE_FUNCTION = "test_10_steps"
RESOLVE_FUNCTION = "resolve_ref"

DEFAULT_CALL_TIMEOUT_S = 15.0
GIT_TIMEOUT_S = 30.0
LOG_LOCATION = "modal-volume"


def call_timeout_s() -> float:
    """The bound on any one network call to Modal (SPEEDQ_MODAL_CALL_TIMEOUT, seconds)."""
    return float(os.environ.get("SPEEDQ_MODAL_CALL_TIMEOUT", DEFAULT_CALL_TIMEOUT_S))


def function_for(mode: str) -> str:
    return SMOKE_FUNCTION if mode == "smoke" else FULL_FUNCTION


def volume_relpath(record: JobRecord) -> PurePosixPath:
    """The run directory relative to the Volume root: `runs/<team>/<run-name>`."""
    return PurePosixPath("runs") / layout.run_relpath(record.spec.team, record.spec.run_name or "")


def _run_sync(make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run `make()` under asyncio.wait_for from sync code (in a thread if a loop is running here)."""

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(bounded())
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError()
    return box["value"]


class ModalBackend:
    """Launch attempts as calls of the deployed Modal app; see speedq/backends/base.py."""

    name = "modal"

    def __init__(
        self,
        app_name: str | None = None,
        volume_name: str | None = None,
        environment_name: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.app_name = app_name or config.MODAL_APP_NAME
        self.volume_name = volume_name or config.MODAL_VOLUME_NAME
        self.environment_name = environment_name or os.environ.get("MODAL_ENVIRONMENT") or None
        self.timeout_s = timeout_s if timeout_s is not None else call_timeout_s()

    # -- plumbing ------------------------------------------------------------------------------

    def _bounded(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Await one SDK call within the bound; Modal's transport and auth errors -> BackendError.

        Other exceptions (the called function's own, NotFoundError, ...) pass through to the caller,
        which knows what they mean there.
        """
        import modal.exception as mexc

        try:
            return _run_sync(make, self.timeout_s)
        except TimeoutError as exc:  # asyncio.wait_for's, i.e. ours (callers catch .get's inside)
            raise BackendError(
                f"Modal did not answer {what} within {self.timeout_s:g}s (no route to Modal's API?)"
            ) from exc
        except mexc.AuthError as exc:
            raise BackendError(f"Modal rejected the credentials during {what}: {_one_line(exc)}") from exc
        except mexc.ConnectionError as exc:
            raise BackendError(f"cannot reach Modal's API during {what}: {_one_line(exc)}") from exc

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
            raise BackendError(f"Modal deployment check failed: {_one_line(exc)}") from exc

    def resolve_ref(self, ref: str) -> str:
        """Pin a ref with `git ls-remote` here when git exists (no container, no cost, ~1 s);
        otherwise with the app's CPU function `resolve_ref`. Both are bounded."""
        if shutil.which("git"):
            return _resolve_locally(config.NANOCHAT_REPO_URL, ref)
        import modal.exception as mexc

        fn = self._function(RESOLVE_FUNCTION)
        try:
            return self._bounded(
                "resolving the ref", lambda: fn.remote.aio(config.NANOCHAT_REPO_URL, ref)
            )
        except mexc.Error as exc:
            raise BackendError(f"cannot resolve nanochat ref {ref!r} on Modal: {_one_line(exc)}") from exc
        except Exception as exc:  # the function's own error, e.g. unknown ref
            raise BackendError(f"cannot resolve nanochat ref {ref!r}: {_one_line(exc)}") from exc

    def run_dir(self, record: JobRecord) -> str:
        return str(PurePosixPath(config.MODAL_VOLUME_MOUNT) / volume_relpath(record))

    def request(self, record: JobRecord, attempt: int) -> RunRequest:
        """The RunRequest the container gets, with the container's paths under the Volume mount."""
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
            repo=config.NANOCHAT_REPO_URL,
            run_dir=self.run_dir(record),
            data_dir=str(mount / "data"),
            cache_dir=str(mount / "cache"),
            launcher="torchrun",
            save_every=spec.save_every,
            force_restart=spec.force_restart,
            train_args=dict(spec.train_args),
        )

    def launch(self, record: JobRecord, attempt: int) -> str:
        import modal.exception as mexc

        spec = record.spec
        payload = self.request(record, attempt).model_dump_json()
        fn = self._function(function_for(spec.mode)).with_options(
            gpu=str(spec.gpu), timeout=spec.attempt_timeout_s
        )
        try:
            call = self._bounded("launching the attempt", lambda: fn.spawn.aio(request=payload))
        except mexc.NotFoundError as exc:
            raise BackendError(
                f"Modal app {self.app_name!r} has no function {function_for(spec.mode)!r}"
                f"{self._env_words()}: run `modal deploy speedq/gpu/modal_app.py`"
            ) from exc
        except mexc.Error as exc:
            raise BackendError(f"Modal refused the launch: {_one_line(exc)}") from exc
        return call.object_id

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        import modal
        import modal.exception as mexc

        fc = modal.FunctionCall.from_id(call_id)
        running = object()

        async def get() -> Any:
            try:
                return await fc.get.aio(timeout=0)
            except TimeoutError:  # the built-in one: not finished yet
                return running

        try:
            value = self._bounded("polling the call", get)
        except BackendError:
            raise
        except (mexc.OutputExpiredError, mexc.NotFoundError) as exc:
            return CallStatus(Outcome.lost, f"Modal no longer knows call {call_id}: {_one_line(exc)}")
        except mexc.FunctionTimeoutError as exc:
            return CallStatus(Outcome.timed_out, _one_line(exc) or "the function ran past its timeout")
        except mexc.InternalFailure as exc:
            return CallStatus(Outcome.preempted, _one_line(exc) or "Modal lost the input")
        except mexc.RemoteError as exc:
            # A cancelled call ends with status TERMINATED, which the client raises as a bare
            # RemoteError carrying the server's message.
            if any(word in str(exc).lower() for word in ("cancel", "terminat")):
                return CallStatus(Outcome.cancelled, _one_line(exc))
            return CallStatus(Outcome.crashed, _one_line(exc))
        except Exception as exc:  # ExecutionError, or the function's own exception re-raised
            return CallStatus(Outcome.crashed, f"{type(exc).__name__}: {_one_line(exc)}")
        if value is running:
            return CallStatus()
        return status_from_value(value)

    def cancel(self, call_id: str) -> None:
        import modal
        import modal.exception as mexc

        fc = modal.FunctionCall.from_id(call_id)
        try:
            self._bounded("cancelling the call", lambda: fc.cancel.aio(terminate_containers=True))
        except (mexc.NotFoundError, mexc.OutputExpiredError):
            return  # nothing left to stop
        except mexc.Error as exc:
            raise BackendError(f"Modal refused to cancel {call_id}: {_one_line(exc)}") from exc

    def _read(self, relpath: str) -> bytes | None:
        """A file of the Volume, or None if it (or the Volume) does not exist."""
        import modal.exception as mexc

        vol = self._volume()

        async def read() -> bytes:
            chunks = [chunk async for chunk in vol.read_file.aio(relpath)]
            return b"".join(chunks)

        try:
            return self._bounded(f"reading {relpath} from volume {self.volume_name!r}", read)
        except (FileNotFoundError, mexc.NotFoundError):
            return None
        except mexc.Error as exc:
            raise BackendError(f"cannot read {relpath} from the Modal volume: {_one_line(exc)}") from exc

    def read_progress(self, record: JobRecord) -> Progress | None:
        """None when there is no progress.json yet or it cannot be read now (never raises)."""
        try:
            raw = self._read(str(volume_relpath(record) / layout.PROGRESS))
        except BackendError as exc:
            log.warning("progress of %s: %s", record.id, exc)
            return None
        if not raw:
            return None
        try:
            return Progress.model_validate_json(raw)
        except ValueError:
            return None  # half-written or foreign

    def read_log(self, record: JobRecord, tail: int | None = None) -> str:
        """The log from the Volume ('' when none yet); BackendError when Modal cannot be reached."""
        raw = self._read(str(volume_relpath(record) / layout.LOG))
        if not raw:
            return ""
        text = raw.decode("utf-8", errors="replace")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

    def log_pointer(self, record: JobRecord) -> LogPointer:
        path = str(volume_relpath(record) / layout.LOG)
        env = f" --env {shlex.quote(self.environment_name)}" if self.environment_name else ""
        return LogPointer(
            location=LOG_LOCATION,
            path=path,
            volume=self.volume_name,
            command=f"modal volume get{env} {shlex.quote(self.volume_name)} {shlex.quote(path)} -",
        )

    def _env_words(self) -> str:
        return f" in environment {self.environment_name!r}" if self.environment_name else ""


# ---------------------------------------------------------------------------------------------


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


def has_credentials() -> bool:
    """A Modal token from MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or the active ~/.modal.toml profile."""
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return True
    try:
        from modal.config import config as modal_config

        return bool(modal_config.get("token_id")) and bool(modal_config.get("token_secret"))
    except Exception:  # an unreadable ~/.modal.toml
        return False


def _resolve_locally(repo: str, ref: str) -> str:
    """runner.resolve_commit under a hard bound (git ls-remote; a stuck git is left behind)."""
    from speedq.gpu import runner

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = runner.resolve_commit(repo, ref)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(GIT_TIMEOUT_S)
    if "error" in box:
        raise BackendError(f"cannot resolve nanochat ref {ref!r}: {_one_line(box['error'])}")
    if "value" not in box:
        raise BackendError(f"resolving nanochat ref {ref!r} took over {GIT_TIMEOUT_S:g}s")
    return box["value"]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
