"""Every error a user or operator can meet, in one tree: each carries its CLI exit code and its
HTTP status, so the CLI and the API map errors the same way from here (no table apart).

Exit codes: 1 the system failed (Redis unreachable, a backend error), 2 refused (invalid input or
settings, no such job, another team's job, not possible in the job's state), 3 over a team quota
or budget.
A module of its own, importing nothing, so the CLI can catch them without importing RQ.
"""

from __future__ import annotations


class SpeedqError(Exception):
    """The base: the message is one line for the user."""

    exit_code = 1
    http_status = 500
    meaning = "the system failed"


class InvalidInput(SpeedqError):
    """A value that fails validation (the CLI and API also map pydantic's ValidationError here)."""

    exit_code = 2
    http_status = 422
    meaning = "invalid input (text that is not valid UTF-8 included)"


class SettingsInvalid(SpeedqError):
    """A `SPEEDQ_*` variable with a bad value: the message names it."""

    exit_code = 2
    http_status = 503
    meaning = "a `SPEEDQ_*` setting has a bad value"


class Unauthorized(SpeedqError):
    exit_code = 2
    http_status = 401
    meaning = "missing or wrong bearer token"


class JobNotFound(SpeedqError, KeyError):
    exit_code = 2
    http_status = 404
    meaning = "no such job"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ProducerError(SpeedqError):
    """A request the queue refuses: not possible in the job's or team's state."""

    exit_code = 2
    http_status = 409
    meaning = "refused: not possible in the job's or team's state"


Refused = ProducerError


class NotYourJob(ProducerError):
    exit_code = 2
    http_status = 403
    meaning = "another team's job"


class QuotaExceeded(ProducerError):
    """The team is over a limit its operator set; nothing was stored."""

    exit_code = 3
    http_status = 429
    meaning = "over a team quota"


class BudgetExceeded(QuotaExceeded):
    """The run's estimate does not fit in the team's GPU-hour budget beside what is spent and
    what its queued and running jobs reserve; nothing was stored."""

    exit_code = 3
    http_status = 402
    meaning = "over the team's GPU-hour budget (spent + reserved by runs in flight + this run's estimate)"


class RedisUnavailable(SpeedqError):
    exit_code = 1
    http_status = 503
    meaning = "the system failed: Redis unreachable"


class BackendError(SpeedqError):
    """The backend cannot do what was asked (no credentials, no deployment, unreachable).

    From `poll` it is never an outcome: the supervisor keeps watching the call."""

    exit_code = 1
    http_status = 502
    meaning = "the system failed: a backend error (Modal unreachable, no token, no deployment)"


# Every class a user can meet, in the order the README lists them.
ALL: tuple[type[SpeedqError], ...] = (
    InvalidInput, SettingsInvalid, Unauthorized, JobNotFound, ProducerError, NotYourJob,
    QuotaExceeded, BudgetExceeded, RedisUnavailable, BackendError,
)


def exit_code_table() -> str:
    """The README's exit-code table, one row per error, from the classes above."""
    rows = ["| exit | API | error | meaning |", "| --- | --- | --- | --- |", "| 0 | 200, 201 | | done |"]
    for kind in sorted(ALL, key=lambda e: e.exit_code):
        rows.append(f"| {kind.exit_code} | {kind.http_status} | `{kind.__name__}` | {kind.meaning} |")
    return "\n".join(rows) + "\n"
