"""Teams: the limits an operator sets, and the record kept for each added team."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
)

from speedq.schemas.rules import Slug, UserInput


def _limit(value: object) -> object:
    """`none` or `unlimited` clears a limit (the CLI's way to say null)."""
    if isinstance(value, str) and value.strip().lower() in ("none", "unlimited"):
        return None
    return value


MaxQueued = Annotated[Annotated[int, Field(ge=0, le=1_000_000)] | None, BeforeValidator(_limit)]
MaxRunning = Annotated[Annotated[int, Field(ge=1, le=10_000)] | None, BeforeValidator(_limit)]
GpuHours = Annotated[Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None, BeforeValidator(_limit)]


# A team's notification target (Slack-compatible JSON is posted to it).

MAX_URL_LEN = 2000


def _webhook_url(value: str) -> str:
    """An http(s) URL with a host and no credentials: a `user:pass@` part would be stored and
    shown wherever the team's settings are, so a secret belongs in the path (as Slack's does)."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or len(value) > MAX_URL_LEN:
        raise ValueError(f"must be a URL of at most {MAX_URL_LEN} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("must be a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("must name a host")
    if "@" in parts.netloc:
        raise ValueError("must not hold credentials (user:password@); put a token in the path")
    from speedq.webhook_target import check_host

    check_host(parts.hostname)  # PrivateTarget is a ValueError: one line, like any rule here
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]


class TeamLimits(UserInput):
    """What `team add` and `team set` accept. None means unlimited."""

    model_config = ConfigDict(extra="forbid")

    max_queued: MaxQueued = None
    max_running: MaxRunning = None
    gpu_hours_budget: GpuHours = None
    webhook_url: Annotated[WebhookUrl | None, BeforeValidator(_limit)] = None


class TeamSettings(TeamLimits):
    """A team's stored record. Extra fields are ignored on read, so a newer speedq can add some
    without older workers failing to parse the record."""

    model_config = ConfigDict(extra="ignore")
    # A stored webhook was checked when it was set; reading it back must not fail if the
    # operator's SPEEDQ_WEBHOOK_ALLOW_PRIVATE changed since (delivery checks again anyway).
    webhook_url: Annotated[str | None, BeforeValidator(_limit)] = None

    name: Slug
    token_hash: str | None = None  # sha256 hex of the team's API token; the token itself is never stored
    created_at: float = Field(default_factory=time.time)
    added: bool = True  # False: a team seen only through submits, running with no limits

    @classmethod
    def open(cls, name: str) -> TeamSettings:
        """The settings of a team nobody added: no limits and no token."""
        return cls(name=name, added=False, created_at=0.0)


class TeamRef(UserInput):
    team: Slug


