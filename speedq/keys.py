"""Every Redis key name and id format speedq writes, in one place (like arq's constants.py).

Nothing else builds a key, a queue name or a job id string: the store, the producer, the reaper
and fair share take them from here. Imports nothing of speedq's, so any module can use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from speedq.schemas import JobSpec  # which imports this module

PREFIX = "speedq"
QUEUE_PREFIX = "speedq"
TeamPart = Literal["running", "gpu-seconds", "waits", "attempts", "reserved"]


class StrEnum(Protocol):
    @property
    def value(self) -> str: ...


# speedq job ids: `sq-<n>`, n from `Keys.seq`.
JOB_ID_PREFIX = "sq-"
JOB_ID_RE = re.compile(r"sq-[0-9]{1,18}")


def job_id(number: int) -> str:
    return f"{JOB_ID_PREFIX}{number}"


# Lua patterns for the speedq job id an RQ job id names (see rq_job_id: the id itself, or
# `<id>-<n>`), for the scripts that meet RQ's ids before anything else names the job.
_JOB_ID_LUA = JOB_ID_PREFIX.replace("-", "%-") + "%d+"
JOB_OF_RQ_JOB_LUA = ("^(" + _JOB_ID_LUA + ")$", "^(" + _JOB_ID_LUA + ")%-%d+$")


def halves(key_of: Callable[[str], str]) -> list[str]:
    """The text of `key_of`'s key before and after the name, for a script that builds the key
    once it knows the name (a name never holds this character)."""
    return key_of("\x00").split("\x00")


def rq_job_id(job: str, previous: str | None) -> str:
    """The RQ job id for the next hand-over of speedq job `job` to RQ: the job id itself the first
    time, then `<job>-<n>` (a retry or re-homing needs a fresh RQ job; the old one may linger)."""
    if previous is None:
        return job
    tail = previous.removeprefix(job).lstrip("-")
    return f"{job}-{(int(tail) if tail.isdigit() else 0) + 1}"


class Keys:
    seq = f"{PREFIX}:seq"

    @staticmethod
    def job(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}"

    @staticmethod
    def index(team: str | None = None, state: StrEnum | str | None = None) -> str:
        state_name = state.value if isinstance(state, Enum) else state
        parts = [f"{PREFIX}:idx"]
        parts.append(f"team={team}" if team else "team=*")
        parts.append(f"state={state_name}" if state_name else "state=*")
        return ":".join(parts)

    @staticmethod
    def supervisor(job_id: str) -> str:
        """Held by the one worker supervising a job; it expires when that worker stops beating."""
        return f"{PREFIX}:supervisor:{job_id}"

    @staticmethod
    def run_claim(team: str, run_name: str) -> str:
        """Which job holds a run directory while it is queued or running (dedupe)."""
        return f"{PREFIX}:run:{team}:{run_name}"

    @staticmethod
    def data_prep(commit: str, shards: int) -> str:
        """Held by the one worker preparing a nanochat commit's data with this many shards."""
        return f"{PREFIX}:prepare:{commit}:{shards}"

    @staticmethod
    def loss_history(job_id: str) -> str:
        """The job's base-training loss curve: a list of "step:loss:time" entries, oldest first."""
        return f"{PREFIX}:loss:{job_id}"

    # The leaderboard, kept by the store as it writes records (see store_board.py): sorted sets
    # of succeeded jobs with results. `board_time`: time-to-GPT-2 entries scored by training
    # seconds; `board_bpb`: full runs of one model scored by minimum val bpb; `board_models`:
    # every model with a `board_bpb` set, scored by depth.
    @staticmethod
    def board_time(team: str | None = None, model: str | None = None) -> str:
        return f"{PREFIX}:board:time:team={team or '*'}:model={model or '*'}"

    @staticmethod
    def board_bpb(model: str, team: str | None = None) -> str:
        return f"{PREFIX}:board:bpb:team={team or '*'}:model={model}"

    board_models = f"{PREFIX}:board:models"

    @staticmethod
    def run_history(spec: JobSpec) -> str:
        """The team's succeeded runs of the spec's backend, model, mode and GPU type, newest
        first (a list of `RunSample` JSON, capped): what cost previews estimate from. A sim run's
        seconds are a CPU's, whatever GPU it names, so they never price a Modal run; Modal's key
        is the one kept before backends had keys of their own, so its history carries on."""
        key = f"{PREFIX}:history:{spec.team}:{spec.model}:{spec.mode}:{spec.gpu.type}"
        return key if spec.backend == "modal" else f"{key}:{spec.backend}"

    # Job id -> when its supervision lease expires (ms): every job a live worker holds.
    held = f"{PREFIX}:held"

    # Fair share shared by every worker: team -> the number of its last turn (a job started),
    # numbered by `turn_counter`.
    turns = f"{PREFIX}:turns"
    # Rung by every enqueue; idle workers wait on it, then pop by script (fair_share).
    doorbell = f"{PREFIX}:doorbell"
    turn_counter = f"{PREFIX}:turns:seq"

    # Every team with a queue: added ones and ones seen only through a submit. Workers read it
    # before each dequeue to find new teams' queues.
    teams = f"{PREFIX}:teams"
    # sha256 of a token -> team name, so an API request finds its team in one read.
    tokens = f"{PREFIX}:tokens"

    @staticmethod
    def team(name: str, part: TeamPart | None = None) -> str:
        """A team's settings (JSON), or one of its counters:
        `running`: ids of its jobs holding a running slot (a set, so a slot belongs to a job);
        `gpu-seconds`: GPU-seconds of its ended attempts (a hash by GPU type);
        `waits`: recent queue waits in seconds, submit or retry to first attempt (a list, newest first);
        `attempts`: its ended attempts by outcome (a hash of counts);
        `reserved`: GPU-seconds its queued and running jobs still hold against its budget (an
        integer: the sum of `estimate.reservation_s` over its records that have not ended).
        """
        return f"{PREFIX}:team:{name}" + (f":{part}" if part else "")


# Webhook deliveries: a queue of their own, outside every team's, that workers take from first.
NOTIFY_QUEUE = f"{QUEUE_PREFIX}-notify"


def queue_name(backend: str, team: str, priority: str) -> str:
    """The RQ queue a job waits in: one per backend, team and priority. RQ names are free text;
    ours stay slug-like."""
    return f"{QUEUE_PREFIX}-{backend}-{team}-{priority}"


