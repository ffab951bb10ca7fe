"""Refusals a user can cause, with their exit codes. A module of their own so the CLI can catch
them without importing RQ (the producer's import) on every command."""

from __future__ import annotations


class ProducerError(Exception):
    """A request the queue refuses; the message is one line for the user."""

    exit_code = 1


class NotYourJob(ProducerError):
    exit_code = 1


class QuotaExceeded(ProducerError):
    """The team is over a limit its operator set; nothing was stored."""

    exit_code = 3
