"""Backends by name. Each is imported only when asked for: the Modal one pulls in `modal`."""

from __future__ import annotations

from speedq.backends.base import Backend, BackendError, CallStatus, LaunchUnknown
from speedq.schemas import JobRecord

__all__ = ["Backend", "BackendError", "CallStatus", "LaunchUnknown", "get_backend", "job_log"]


def get_backend(name: str) -> Backend:
    if name == "sim":
        from speedq.backends.sim import SimBackend

        return SimBackend()
    if name == "local":
        from speedq.backends.local import LocalBackend

        return LocalBackend()
    if name == "modal":
        from speedq.backends.modal import ModalBackend

        return ModalBackend()
    raise BackendError(f"unknown backend {name!r}")


def job_log(record: JobRecord, tail: int | None = None) -> str:
    """A job's log from wherever its backend keeps it; '' before the run has a directory."""
    if record.run_dir is None:
        return ""
    return get_backend(record.spec.backend).read_log(record, tail)
