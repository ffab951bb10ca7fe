"""The claim state a process expects after its own submit, so that its next submit of the same
team and kind of run writes at once (one round trip) instead of reading first (two): what an
API server or a Python loop submitting many jobs pays per job.

A guess is only ever an input to the decision, never trusted. The write script recomputes the
digest of what Redis holds and applies only if it matches the guess's; if it does not, it
returns what Redis holds and the submit decides again on that. A guess that leads to anything
but a write (a refusal, or a run another job holds) is dropped and the submit reads. So guessing
changes how many round trips a submit takes, never what it does.

The guess is the last state this process read, with its own write replayed on it: the sequence,
the team's queued count and its reservation move; nothing else in a submit touches what the
claim reads. A write it cannot replay exactly leaves no guess.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

import redis
from redis.typing import EncodableT, KeyT

# The claim read's reply, part by part (store_claim._CLAIM_STATE returns them in this order).
HOLDER, HOLDER_RAW, QUEUED, SECONDS, SEQ, TEAM, RESERVED, HISTORY, DIGEST = range(9)
# The part each of the claim's KEYS is read into. KEYS[1] (the run's claim) and KEYS[6] (the
# job key prefix) are the run's own: the next submit is of another run, held by no one.
_PART_OF_KEY = {1: QUEUED, 2: SECONDS, 3: SEQ, 4: TEAM, 6: RESERVED, 7: HISTORY}
_KEPT = 256  # guesses per connection: one per (team, backend, model, mode, GPU type) recently submitted

_lock = threading.Lock()
_guesses: WeakKeyDictionary[redis.Redis, dict[tuple[KeyT, ...], list[Any]]] = WeakKeyDictionary()


def _shared(keys: Sequence[KeyT]) -> tuple[KeyT, ...]:
    return tuple(keys[i] for i in _PART_OF_KEY)


def take(conn: redis.Redis, keys: Sequence[KeyT]) -> list[Any] | None:
    """The guessed reply for a claim of `keys`, if this process has one; it is used up."""
    with _lock:
        kept = _guesses.get(conn)
        return kept.pop(_shared(keys), None) if kept else None


def keep(conn: redis.Redis, keys: Sequence[KeyT], reply: list[Any], written: Sequence[Sequence[EncodableT]]) -> None:
    """Remember `reply` (the state the write was decided on) with `written` replayed on it."""
    after = replayed(reply, keys, written)
    if after is None:
        return
    with _lock:
        kept = _guesses.setdefault(conn, {})
        kept[_shared(keys)] = after
        if len(kept) > _KEPT:
            del kept[next(iter(kept))]


def replayed(reply: list[Any], keys: Sequence[KeyT], written: Sequence[Sequence[EncodableT]]) -> list[Any] | None:
    """The claim read's reply after `written` (a submit's commands), for a submit of another
    run; None if a command touches what the claim reads in a way not replayed here."""
    after = list(reply)
    after[HOLDER] = after[HOLDER_RAW] = None
    part_of = {str(keys[i]): part for i, part in _PART_OF_KEY.items()}
    for words in written:
        part = part_of.get(str(words[1])) if len(words) > 1 else None
        if part is None:
            continue
        name = str(words[0]).upper()
        if name == "SET" and part in (SEQ, TEAM, RESERVED):
            after[part] = _bytes(words[2])
        elif name == "INCRBY" and part in (SEQ, RESERVED) and isinstance(words[2], int):
            after[part] = b"%d" % (int(after[part] or 0) + words[2])
        elif name == "ZADD" and part == QUEUED and len(words) == 4:
            after[part] = int(after[part]) + 1  # a new job's id: a new member
        else:
            return None
    after[DIGEST] = digest(after)
    return after


def digest(reply: list[Any]) -> bytes:
    """What _CLAIM_STATE's redis.sha1hex returns for these parts."""
    parts = [_bytes(reply[HOLDER]), _bytes(reply[HOLDER_RAW]), b"%d" % int(reply[QUEUED]),
             b",".join(reply[SECONDS]), _bytes(reply[SEQ]), _bytes(reply[TEAM]), _bytes(reply[RESERVED]),
             b"\n".join(reply[HISTORY])]
    return hashlib.sha1(b"\n".join(parts)).hexdigest().encode()


def _bytes(value: EncodableT | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()
