"""`speedq worker`'s options and start, without typer (see `speedq.entry`): an argparse parser
whose refusals are `InvalidInput` (one line, exit 2), and the values validated by
`schemas.WorkerOptions` like every other input."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

from speedq.errors import InvalidInput

if TYPE_CHECKING:
    import argparse

DESCRIPTION = "Run an RQ worker for speedq's queues."


def parser() -> argparse.ArgumentParser:
    import argparse  # here, not on import: `speedq.cli` lists the command without parsing it

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise InvalidInput(message)

    p = Parser(prog="speedq worker", description=DESCRIPTION, allow_abbrev=False)
    p.add_argument("--burst", action="store_true", help="Quit when the queues are empty.")
    p.add_argument("--backend", action="append", help="Serve jobs for this backend (repeatable).")
    p.add_argument("--name", help="Worker name [default: host.pid].")
    p.add_argument("--notify-only", action="store_true", help="Only deliver webhook notifications.")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    from speedq import settings
    from speedq.client import Client
    from speedq.schemas import WorkerOptions
    from speedq.worker_process import run_worker

    default = [] if args.notify_only else [settings.get().backend]
    options = WorkerOptions.model_validate({"backends": args.backend or default, "notify_only": args.notify_only})
    conn = Client().conn
    serving = "webhook notifications" if args.notify_only else f"{', '.join(options.backends)} jobs"
    # A plain line: a worker never needs rich, and holding it would cost every idle worker memory.
    print(f"speedq worker serving {serving}" + (" (burst)" if args.burst else ""), file=sys.stderr, flush=True)
    run_worker(conn, list(options.backends), burst=args.burst, name=args.name)
