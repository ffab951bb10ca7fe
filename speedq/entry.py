"""The `speedq` console script. `speedq worker` is parsed by `speedq.worker_cli` before typer is
imported, so an idle worker does not hold the CLI (typer and its click: about 1.6 MB of every
worker, issue 11), and `speedq status JOB [--json]` is served by `speedq.show` (typer and click
are a third of a status); every other command goes to the typer app in `speedq.cli`. The worker's
options have one parser, `worker_cli`'s: the typer app's `worker` only lists it and hands over.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        from speedq import worker_cli

        with one_line_errors():
            worker_cli.main(args[1:])
        return
    if args[:1] == ["status"]:
        from speedq.client import Client
        from speedq.show import plain_form, show

        plain = plain_form(args[1:])
        if plain is not None:
            with one_line_errors():
                show(Client(), *plain)
            return
    from speedq import cli

    cli.main(args)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """What a user can cause, as one line on stderr and its exit code, never a traceback."""
    from pydantic import ValidationError

    from speedq.errors import InvalidInput, SpeedqError

    try:
        yield
    except ValidationError as exc:
        from speedq.schemas import describe

        fail(describe(exc), InvalidInput.exit_code)
    except SpeedqError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def fail(message: str, code: int) -> NoReturn:
    from rich.text import Text

    from speedq.terminal import err

    err().print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    sys.exit(code)
