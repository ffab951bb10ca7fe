"""Backends by name. Each is imported only when asked for: the Modal one pulls in `modal`."""

from __future__ import annotations

from speedq.backends.base import Backend, BackendError, CallStatus, LaunchUnknown

__all__ = ["Backend", "BackendError", "CallStatus", "LaunchUnknown", "get_backend"]


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
