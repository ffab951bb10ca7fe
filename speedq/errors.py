"""Refusals a user can cause, with their exit codes. A module of their own so the CLI can catch
them without importing RQ (the producer's import) on every command."""

from __future__ import annotations


class ProducerError(Exception):
    """A request the queue refuses (not possible in the job's or team's state); the message is
    one line for the user. Exit codes: 2 refused, 3 over a team quota (1 is for the system
    failing: Redis unreachable, a backend error)."""

    exit_code = 2


class NotYourJob(ProducerError):
    exit_code = 2


class QuotaExceeded(ProducerError):
    """The team is over a limit its operator set; nothing was stored."""

    exit_code = 3
