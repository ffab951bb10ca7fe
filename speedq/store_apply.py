"""Compare-and-apply: a store write as one Lua script that runs the writes queued on a redis-py
pipeline only if what they were decided from is still what Redis holds.

WATCH, the read and MULTI/EXEC cost three round trips, each far dearer than its bytes on a loaded
machine; a script that compares and then writes costs one, and is as atomic (Redis runs a script
with nothing in between). The writes are queued on an ordinary pipeline in MULTI mode, so RQ's
`enqueue(pipeline=...)` adds its own as before, but the pipeline is never executed: `packed`
turns its commands into the script's arguments, and `APPLY` replays them with redis.call.
speedq and RQ run against one Redis server, where a script may write keys it was not handed.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

# Commands that cannot run inside a script (or would undo its atomicity).
_NOT_IN_SCRIPTS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "MULTI", "EXEC", "WATCH", "UNWATCH"}
# Increments Redis refuses at run time if their argument is not a 64-bit integer (or a finite
# float). Redis does not undo a script's earlier writes when a later command fails, so `packed`
# refuses such an argument before anything is sent.
# Each one's argument position, and whether Redis reads it as an integer (else as a float).
_INCREMENTS = {"INCRBY": (2, True), "DECRBY": (2, True), "HINCRBY": (3, True),
               "INCRBYFLOAT": (2, False), "HINCRBYFLOAT": (3, False)}
_REDIS_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_REDIS_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")

# Lua: `apply(from)` runs the commands packed into ARGV from index `from` on, each as its word
# count and then its words. DELIFEQ is speedq's own (Redis has none): delete a key only if it
# still holds the given value.
APPLY = """
local function apply(from)
  local i = from
  while i <= #ARGV do
    local n = tonumber(ARGV[i])
    if ARGV[i + 1] == 'DELIFEQ' then
      if redis.call('get', ARGV[i + 2]) == ARGV[i + 3] then redis.call('del', ARGV[i + 2]) end
    else
      redis.call(unpack(ARGV, i + 1, i + n))
    end
    i = i + n + 1
  end
end
"""


def writes(conn: redis.Redis) -> redis.client.Pipeline:
    """A pipeline in MULTI mode to queue writes on for `packed`; nothing on it is ever executed."""
    pipe = conn.pipeline(transaction=True)
    pipe.multi()
    return pipe


def put(pipe: redis.client.Pipeline, key: str, value: EncodableT) -> None:
    """Queue a plain SET. redis-py's `set` weighs a dozen options (and their deprecations) at
    every call: about 9 us against 1 us for the command itself, and a submit sets three keys."""
    pipe.execute_command("SET", key, value)


def delete_if_equal(pipe: redis.client.Pipeline, key: str, value: str) -> None:
    """Queue DELIFEQ (see APPLY): only a script built on APPLY can run this pipeline's commands."""
    pipe.execute_command("DELIFEQ", key, value)


def packed(pipe: redis.client.Pipeline) -> list[EncodableT]:
    """The commands queued on `pipe` as APPLY's arguments; the pipeline is emptied."""
    args: list[EncodableT] = []
    for words, _options in pipe.command_stack:
        name = str(words[0]).upper()
        if name in _NOT_IN_SCRIPTS:
            raise ValueError(f"{name} cannot be applied by a script")
        _check_increment(name, words)
        args.append(len(words))
        args.extend(words)
    pipe.reset()
    return args


def _check_increment(name: str, words: tuple[Any, ...]) -> None:
    if name not in _INCREMENTS:
        return
    position, whole = _INCREMENTS[name]
    by = words[position] if len(words) > position else None
    if not (_redis_int(by) if whole else _redis_float(by)):
        raise ValueError(f"{name} by {by!r}: Redis would refuse it after the script's earlier writes")


def _redis_int(by: object) -> bool:
    """A 64-bit integer, and written as Redis reads one: ASCII digits, no sign but '-', no padding."""
    if isinstance(by, bytes):
        by = by.decode("latin-1")
    if isinstance(by, str):
        by = int(by) if len(by) < 21 and _REDIS_INT.fullmatch(by) else None
    return isinstance(by, int) and not isinstance(by, bool) and -(2**63) <= by < 2**63


def _redis_float(by: object) -> bool:
    """A finite number, and written as Redis reads one."""
    if isinstance(by, bytes):
        by = by.decode("latin-1")
    if isinstance(by, str):
        return bool(_REDIS_FLOAT.fullmatch(by)) and math.isfinite(float(by))
    return (isinstance(by, int) and not isinstance(by, bool)) or (isinstance(by, float) and math.isfinite(by))


class Script:
    """A Lua script sent by its sha1 (EVALSHA), its text only when the server has not seen it yet
    (a new or restarted server, or SCRIPT FLUSH): then one more round trip, and EVAL caches it.
    A submit's write carries a hundred-odd arguments after the script, and redis-py's encoder
    copies everything packed so far at each one: the script's text, sent with every EVAL, was
    over a third of the submit's packing time (~160 us against ~100 us by sha1). Not redis-py's
    `Script`, which loads with a round trip of its own and has no read-only form."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def run(self, conn: redis.Redis, keys: tuple[KeyT, ...], *args: EncodableT, read_only: bool = False) -> Any:
        """Run it with `keys` and `args`; `read_only`: as EVALSHA_RO (the server refuses writes)."""
        try:
            if read_only:
                return conn.evalsha_ro(self.sha, len(keys), *keys, *args)
            return conn.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            if read_only:
                return conn.eval_ro(self.text, len(keys), *keys, *args)
            return conn.eval(self.text, len(keys), *keys, *args)
