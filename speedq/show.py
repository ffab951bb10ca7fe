"""`speedq status JOB [--json]`: the command people run most, served before typer is imported.

The console script hands `status` here when its arguments are that plain form (anything else,
`--help` included, goes to the typer app, which calls `show` too). A status then costs pydantic,
the record's schema, rich and one socket: not typer, click or redis-py (issue 11).
"""

from __future__ import annotations

from collections.abc import Sequence

from speedq.client import Client

JSON_FLAG = "--json"


def plain_form(args: Sequence[str]) -> tuple[str, bool] | None:
    """(job, as_json) from `status`'s arguments in their plain form; None for anything else."""
    rest = [a for a in args if a != JSON_FLAG]
    if len(rest) != 1 or rest[0].startswith("-") or len(args) - len(rest) > 1:
        return None
    return rest[0], len(rest) != len(args)


def show(client: Client, job: str, as_json: bool) -> None:
    from speedq.terminal import out, print_json

    record = client.get(job)
    if as_json:
        print_json(record)
    else:
        from speedq.views import job_detail

        out().print(job_detail(record))
