"""Where the CLI prints: rich consoles made on first use, and JSON documents.

rich is imported on first use, not with the module: `status --json` and `worker` never print
through it, and an idle worker should not hold it (issue 11).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console


@functools.cache
def out() -> Console:
    from rich.console import Console

    # Piped output (tests, `| less`) gets wide tables instead of squeezed columns.
    return Console(width=None if sys.stdout.isatty() else 200)


@functools.cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def print_json(data: BaseModel | Sequence[BaseModel], exclude: set[str] | None = None) -> None:
    if isinstance(data, Sequence):
        text = json.dumps([d.model_dump(mode="json", exclude=exclude) for d in data])
    else:
        text = data.model_dump_json(exclude=exclude)
    sys.stdout.write(text + "\n")
