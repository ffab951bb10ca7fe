"""Teams: adding one with its API token, changing its limits, and which team a token is.

A token is shown once, when made; Redis keeps only its sha256, so a leaked dump of Redis gives
no one a working token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from speedq.errors import ProducerError
from speedq.schemas import TeamLimits, TeamSettings
from speedq.store import Store


class TeamError(ProducerError):
    """A team operation that cannot be done (adding one twice, changing one never added)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and its hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def add_team(store: Store, name: str, limits: TeamLimits) -> tuple[TeamSettings, str]:
    """Add a team; returns its settings and its token (the only time the token is seen)."""
    token, token_hash = new_token()
    settings = TeamSettings(name=name, token_hash=token_hash, **limits.model_dump())
    if not store.add_team(settings):
        raise TeamError(f"team {name!r} was already added; change it with `speedq team set {name}`")
    return settings, token


def set_team(store: Store, name: str, limits: TeamLimits, rotate_token: bool) -> tuple[TeamSettings, str | None]:
    """Change the limits given (the ones `limits` has set) and, if asked, replace the token."""
    current = store.team(name)
    if not current.added:
        raise TeamError(f"team {name!r} has not been added; add it with `speedq team add {name}`")
    settings = current.model_copy(update=limits.model_dump(exclude_unset=True))
    token = None
    if rotate_token:
        token, settings.token_hash = new_token()
    store.save_team(settings, old_token_hash=current.token_hash)
    return settings, token


def authenticate(store: Store, token: str) -> TeamSettings | None:
    """The team whose token this is, or None."""
    token_hash = hash_token(token)
    team = store.team_for_token_hash(token_hash)
    if team is None or team.token_hash is None:
        return None
    # The lookup matched by hash already; the constant-time compare keeps the check itself from
    # leaking how much of a guess was right if the lookup ever changes.
    return team if hmac.compare_digest(team.token_hash, token_hash) else None
