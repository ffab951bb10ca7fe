"""Package attributes imported on first use (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def attributes(package: str, namespace: dict[str, Any], homes: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: each public name is imported from its home module
    (`homes`: name -> module path) the first time it is asked for, then kept in `namespace`."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        namespace[name] = value  # once: later lookups skip this function
        return value

    return __getattr__
