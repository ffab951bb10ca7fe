"""What the Modal backend reads from the Volume: a container's announcement, progress.json and
the log. `ModalBackend` inherits these; callers use `ModalBackend`, never this class alone.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any, Final, TypeVar

from speedq.backends.base import BackendError
from speedq.backends.modal_outcomes import one_line
from speedq.gpu import layout
from speedq.schemas import JobRecord, LogPointer, Progress

log = logging.getLogger("speedq.backends.modal")  # the logger these lines always came from

T = TypeVar("T")

LOG_LOCATION: Final = "modal-volume"


def volume_relpath(record: JobRecord) -> PurePosixPath:
    """The run directory relative to the Volume root: `runs/<team>/<run-name>`."""
    return PurePosixPath("runs") / layout.run_relpath(record.spec.team, record.spec.run_name or "")


def attempt_relpath(record: JobRecord, attempt: int | None = None) -> PurePosixPath:
    """The run directory of `attempt` (default: the current one): a preflight's is its own."""
    run = volume_relpath(record)
    return run / layout.PREFLIGHT_DIR if record.is_preflight(attempt) else run


class VolumeFiles:
    """ModalBackend's Volume readers (see the module docstring)."""

    # ModalBackend provides these: its names, and its bounded SDK calls.
    volume_name: str
    environment_name: str | None

    def _bounded(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    def _volume(self) -> Any:
        raise NotImplementedError

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        """The call id the container of `attempt` wrote into the run directory as its first act."""
        raw = self._read(str(attempt_relpath(record, attempt) / layout.announce_name(attempt)))
        if not raw:
            return None
        try:
            call_id = json.loads(raw).get("call_id")
        except (ValueError, AttributeError):
            return None  # half-written: not announced yet, as far as we can tell
        return call_id if isinstance(call_id, str) and call_id else None

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
            raise BackendError(f"cannot read {relpath} from the Modal volume: {one_line(exc)}") from exc

    def read_progress(self, record: JobRecord) -> Progress | None:
        """None when there is no progress.json yet or it cannot be read now (never raises)."""
        try:
            raw = self._read(str(attempt_relpath(record) / layout.PROGRESS))
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
        raw = self._read(str(attempt_relpath(record) / layout.LOG))
        if not raw:
            return ""
        text = raw.decode("utf-8", errors="replace")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

    def log_pointer(self, record: JobRecord) -> LogPointer:
        path = str(attempt_relpath(record) / layout.LOG)
        env = f" --env {shlex.quote(self.environment_name)}" if self.environment_name else ""
        return LogPointer(
            location=LOG_LOCATION,
            path=path,
            volume=self.volume_name,
            command=f"modal volume get{env} {shlex.quote(self.volume_name)} {shlex.quote(path)} -",
        )
