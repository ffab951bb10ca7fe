"""Stand-ins for exactly the Modal SDK objects speedq's Modal backend touches.

`install(monkeypatch)` puts them on the real `modal` module (modal.Function, modal.FunctionCall,
modal.Volume) and returns the `ModalWorld` that holds their state: which functions are deployed,
the calls spawned and how each ends, the Volume's files, whether a token is valid, and how slow
the API is. They raise the REAL `modal.exception` classes, the way modal 1.6.4's client does
(see /work/shared/modal-facts.md).

Only the `.aio` twins work: a plain blocking call fails the test, because the backend must bound
every network call with asyncio.wait_for. `SIGNATURES` lists every stand-in method next to the
real one it stands for; tests/test_modal_backend.py checks them against the installed package.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import itertools
from dataclasses import dataclass
from typing import Any

import modal
import modal.exception as mexc


class ModalWorld:
    """The state behind the stand-ins: one fake Modal account."""

    def __init__(self) -> None:
        self.deployed: set[tuple[str, str]] = set()
        self.calls: dict[str, Call] = {}
        self.volumes: dict[str, dict[str, bytes]] = {}
        self.authorized = True
        self.latency_s = 0.0  # every API call takes this long (a huge value = no route)
        self.spawns: list[Call] = []
        self.remote_calls: list[tuple[str, str, tuple, dict]] = []
        self.remote_results: dict[tuple[str, str], Any] = {}
        self._ids = itertools.count(1)

    def deploy(self, app_name: str, *function_names: str) -> None:
        for name in function_names:
            self.deployed.add((app_name, name))

    def write(self, volume: str, path: str, data: bytes | str) -> None:
        self.volumes.setdefault(volume, {})[path] = data.encode() if isinstance(data, str) else data

    # how a call ends
    def finish(self, call_id: str, value: Any = None) -> None:
        self.calls[call_id].done, self.calls[call_id].value = True, value

    def fail(self, call_id: str, exc: BaseException) -> None:
        self.calls[call_id].error = exc

    async def api(self) -> None:
        """One round trip to the service."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if not self.authorized:
            raise mexc.AuthError("Token missing. Could not authenticate client.")

    def new_call_id(self) -> str:
        return f"fc-standin{next(self._ids):06d}"


WORLD = ModalWorld()


@dataclass
class Call:
    object_id: str
    app_name: str
    function_name: str
    options: dict[str, Any]
    args: tuple
    kwargs: dict[str, Any]
    done: bool = False
    value: Any = None
    error: BaseException | None = None
    cancelled_with: dict[str, Any] | None = None


class _Method:
    """A method with a blocking form (refused here) and an awaitable `.aio` twin, like modal's."""

    def __init__(self, fn: Any, gen: bool = False) -> None:
        functools.update_wrapper(self, fn)
        self.fn, self.gen = fn, gen

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return _Bound(self, obj)

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return _Bound(self, obj)(*args, **kwargs)


class _Bound:
    def __init__(self, method: _Method, obj: Any) -> None:
        self.method, self.obj = method, obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            f"blocking {self.method.fn.__qualname__}() called: speedq must await the .aio twin "
            "under asyncio.wait_for"
        )

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        # a coroutine, or an async generator for read_file, as modal's own .aio twins give
        return self.method.fn(self.obj, *args, **kwargs)


def live(fn: Any) -> _Method:
    return _Method(fn)


def live_gen(fn: Any) -> _Method:
    return _Method(fn, gen=True)


class Function:
    """modal.Function as returned by Function.from_name (lazy, no network until used)."""

    def __init__(self, app_name: str, name: str, environment_name: str | None, options: dict) -> None:
        self.app_name, self.name = app_name, name
        self.environment_name, self.options = environment_name, options

    @classmethod
    def from_name(
        cls,
        app_name: str,
        name: str,
        *,
        version: int | None = None,
        environment_name: str | None = None,
        client: Any = None,
    ) -> Function:
        if "." in name:
            raise mexc.InvalidError(f"Invalid Function name: {name!r}.")
        return cls(app_name, name, environment_name, {})

    def with_options(
        self,
        *,
        cpu: Any = None,
        memory: Any = None,
        gpu: str | None = None,
        env: Any = None,
        secrets: Any = None,
        volumes: Any = {},  # noqa: B006 - the real signature's default
        retries: Any = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = None,
        region: Any = None,
        cloud: str | None = None,
        routing_region: str | None = None,
    ) -> Function:
        given = {"gpu": gpu, "timeout": timeout, "cpu": cpu, "memory": memory, "retries": retries}
        options = {**self.options, **{k: v for k, v in given.items() if v is not None}}
        return Function(self.app_name, self.name, self.environment_name, options)

    async def _lookup(self) -> None:
        await WORLD.api()
        if (self.app_name, self.name) not in WORLD.deployed:
            raise mexc.NotFoundError(
                f"Lookup failed for Function '{self.name}' from the '{self.app_name}' app: "
                "App not found."
            )

    @live
    async def hydrate(self, client: Any = None) -> Function:
        await self._lookup()
        return self

    @live
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        await self._lookup()
        call = Call(WORLD.new_call_id(), self.app_name, self.name, dict(self.options), args, kwargs)
        WORLD.calls[call.object_id] = call
        WORLD.spawns.append(call)
        return FunctionCall(call.object_id)

    @live
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        await self._lookup()
        WORLD.remote_calls.append((self.app_name, self.name, args, kwargs))
        result = WORLD.remote_results.get((self.app_name, self.name))
        if isinstance(result, BaseException):
            raise result
        return result(*args, **kwargs) if callable(result) else result


class FunctionCall:
    def __init__(self, object_id: str) -> None:
        self.object_id = object_id

    @classmethod
    def from_id(cls, function_call_id: str, client: Any = None) -> FunctionCall:
        return cls(function_call_id)  # lazy: an unknown id shows only when used

    @live
    async def get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        await WORLD.api()
        call = WORLD.calls.get(self.object_id)
        if call is None:
            raise mexc.OutputExpiredError(f"Output for {self.object_id} has expired or does not exist")
        if call.cancelled_with is not None:
            raise mexc.RemoteError("Function call was cancelled by user (terminated)")
        if call.error is not None:
            raise call.error
        if call.done:
            return call.value
        if timeout:
            await asyncio.sleep(timeout)
        raise builtins.TimeoutError()

    @live
    async def cancel(self, terminate_containers: bool = False) -> None:
        await WORLD.api()
        call = WORLD.calls.get(self.object_id)
        if call is None:
            raise mexc.NotFoundError(f"Function call {self.object_id} not found")
        call.cancelled_with = {"terminate_containers": terminate_containers}


class Volume:
    def __init__(self, name: str, environment_name: str | None) -> None:
        self.name, self.environment_name = name, environment_name

    @staticmethod
    def from_name(
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        version: Any = None,
        create_options: Any = None,
        client: Any = None,
    ) -> Volume:
        if create_if_missing:
            WORLD.volumes.setdefault(name, {})
        return Volume(name, environment_name)

    @live_gen
    async def read_file(self, path: str):  # -> AsyncGenerator[bytes, None]
        await WORLD.api()
        files = WORLD.volumes.get(self.name)
        if files is None:
            raise mexc.NotFoundError(f"Volume '{self.name}' not found")
        data = files.get(path.lstrip("/"))
        if data is None:
            raise FileNotFoundError(f"No such file: {path}")
        for start in range(0, max(len(data), 1), 7):  # small chunks, so joining matters
            yield data[start : start + 7]


# The installed package's classes, taken before any test swaps the stand-ins in.
REAL_FUNCTION, REAL_FUNCTION_CALL, REAL_VOLUME = modal.Function, modal.FunctionCall, modal.Volume

# (stand-in, the installed package's object it stands for); for the signature test.
SIGNATURES = [
    (Function.from_name, REAL_FUNCTION.from_name),
    (Function.with_options, REAL_FUNCTION.with_options),
    (Function.hydrate, REAL_FUNCTION.hydrate),
    (Function.spawn, REAL_FUNCTION.spawn),
    (Function.remote, REAL_FUNCTION.remote),
    (FunctionCall.from_id, REAL_FUNCTION_CALL.from_id),
    (FunctionCall.get, REAL_FUNCTION_CALL.get),
    (FunctionCall.cancel, REAL_FUNCTION_CALL.cancel),
    (Volume.from_name, REAL_VOLUME.from_name),
    (Volume.read_file, REAL_VOLUME.read_file),
]
# Methods whose `.aio` twin the backend awaits.
AIO_METHODS = [
    REAL_FUNCTION.spawn,
    REAL_FUNCTION.hydrate,
    REAL_FUNCTION.remote,
    REAL_FUNCTION_CALL.get,
    REAL_FUNCTION_CALL.cancel,
    REAL_VOLUME.read_file,
]


def install(monkeypatch: Any) -> ModalWorld:
    """Swap the stand-ins onto the real modal module for one test; a fresh world each time."""
    global WORLD
    WORLD = ModalWorld()
    monkeypatch.setattr(modal, "Function", Function)
    monkeypatch.setattr(modal, "FunctionCall", FunctionCall)
    monkeypatch.setattr(modal, "Volume", Volume)
    return WORLD
