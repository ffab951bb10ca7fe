"""Defaults and environment settings: the one place each of them is written down."""

from __future__ import annotations

import os
from pathlib import Path

from speedq.gpu import nanochat

# What a job gets when the user does not say.
DEFAULT_MODEL = "d12"
DEFAULT_REPO_REF = nanochat.KNOWN_GOOD_COMMIT  # a commit known to work, not a moving master
DEFAULT_GPU = "H100:8"
DEFAULT_PRIORITY = "normal"
DEFAULT_BACKEND = "modal"
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPT_TIMEOUT_S = 24 * 3600  # Modal stops a function at 24 h
DEFAULT_ATTEMPT_TIMEOUT_S = MAX_ATTEMPT_TIMEOUT_S
SMOKE_STEPS = nanochat.SMOKE_STEPS

GPU_TYPES = ("H100", "H200", "A100-80GB", "A100-40GB", "L40S", "A10G", "B200", "CPU")
CPU_GPU_TYPE = "CPU"  # no GPU: the local and sim backends only, one process
CPU_BACKENDS = ("local", "sim")
MAX_GPU_COUNT = 8
PRIORITIES = ("high", "normal", "low")
BACKENDS = ("modal", "local", "sim")

# nanochat's default repository, cloned by the Modal app and by the local backend when the
# user points it at no checkout of their own.
NANOCHAT_REPO_URL = "https://github.com/karpathy/nanochat.git"

# Modal names (the app's and the workers' side read the same variables).
MODAL_APP_NAME = os.environ.get("SPEEDQ_MODAL_APP", "speedq")
MODAL_VOLUME_NAME = os.environ.get("SPEEDQ_MODAL_VOLUME", "nanochat-persistent-storage")
MODAL_VOLUME_MOUNT = "/vol"

REDIS_URL_ENV = "SPEEDQ_REDIS_URL"

# Estimated cost for `speedq stats`: USD per GPU-hour by GPU type (Modal's list prices when this
# was written). `SPEEDQ_PRICES` overrides some or all of them: '{"H100": 3.0}'.
DEFAULT_GPU_PRICES = {
    "H100": 3.95,
    "H200": 4.54,
    "A100-80GB": 2.50,
    "A100-40GB": 2.10,
    "L40S": 1.95,
    "A10G": 1.10,
    "B200": 6.25,
    "CPU": 0.0,
}
PRICES_ENV = "SPEEDQ_PRICES"

# How many recent queue waits per team `stats` takes its median and p95 from.
WAIT_SAMPLES_KEPT = 1000

# About how many points of a run's loss curve the store keeps (the dashboard plots them).
LOSS_POINTS = 1000


def open_teams() -> bool:
    """Whether a team nobody added may submit (with no limits). `SPEEDQ_OPEN_TEAMS=0` locks the
    queue to added teams; the default keeps a single-team set-up working with no `team add`."""
    return os.environ.get("SPEEDQ_OPEN_TEAMS", "1").strip().lower() not in ("0", "false", "no")


def dequeue_block_s() -> int:
    """How long an idle worker waits on its queues before looking again for new teams and freed
    running slots (BLPOP's timeout, whole seconds)."""
    return max(1, int(float(os.environ.get("SPEEDQ_DEQUEUE_BLOCK", "2"))))


def home() -> Path:
    """speedq's state directory: embedded Redis data, local runs, the sim nanochat repo."""
    explicit = os.environ.get("SPEEDQ_HOME")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "speedq"


def runs_root() -> Path:
    """Where the local and sim backends keep run directories (`<root>/<team>/<run-name>/`)."""
    return Path(os.environ.get("SPEEDQ_RUNS_DIR") or home() / "runs")


def data_root() -> Path:
    """Shared data (dataset shards, tokenizer) for local and sim runs, reused by every run."""
    return Path(os.environ.get("SPEEDQ_DATA_DIR") or home() / "data")


def cache_root() -> Path:
    """Per-commit nanochat checkouts and compile caches for local and sim runs."""
    return Path(os.environ.get("SPEEDQ_CACHE_DIR") or home() / "cache")


def offline() -> bool:
    """`SPEEDQ_OFFLINE=1`: local runs skip the nanochat stages that need the internet."""
    return os.environ.get("SPEEDQ_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def poll_interval_s() -> float:
    """How often a worker polls its backend call and writes progress back."""
    return float(os.environ.get("SPEEDQ_POLL_INTERVAL", "1.0"))


# Webhook notifications. A Slack webhook answers in well under a second; a longer wait only
# holds up the worker that delivers, so the timeout is short and RQ retries what it cuts off.
NOTIFY_TIMEOUT_S = 5.0
# Five retries over about 20 minutes: enough to ride out a receiver's restart or deploy.
NOTIFY_MAX_RETRIES = 5
NOTIFY_RETRY_INTERVALS_S = (10, 30, 60, 300, 900)
NOTIFY_KEEP_S = 7 * 24 * 3600  # delivered and given-up notifications stay this long in RQ


def notify_timeout_s() -> float:
    return float(os.environ.get("SPEEDQ_NOTIFY_TIMEOUT", str(NOTIFY_TIMEOUT_S)))


def notify_retry_intervals_s() -> list[int]:
    """Seconds before each retry of a failed delivery; `SPEEDQ_NOTIFY_RETRY_INTERVALS=1,1,1`."""
    text = os.environ.get("SPEEDQ_NOTIFY_RETRY_INTERVALS")
    if not text:
        return list(NOTIFY_RETRY_INTERVALS_S)
    return [int(part) for part in text.split(",") if part.strip()]
