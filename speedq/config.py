"""Constants: job defaults, GPU types, prices, limits. Settings read from the environment live in
`speedq.settings`; this module reads no environment."""

from __future__ import annotations

from typing import Final, Literal, get_args

from speedq.gpu import nanochat

# What a job gets when the user does not say.
DEFAULT_MODEL = "d12"
DEFAULT_REPO_REF = nanochat.KNOWN_GOOD_COMMIT  # a commit known to work, not a moving master
DEFAULT_GPU = "H100:8"
DEFAULT_PRIORITY: Final = "normal"
DEFAULT_BACKEND: Final = "modal"
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPT_TIMEOUT_S = 24 * 3600  # Modal stops a function at 24 h
DEFAULT_ATTEMPT_TIMEOUT_S = MAX_ATTEMPT_TIMEOUT_S
SMOKE_STEPS = nanochat.SMOKE_STEPS

GPU_TYPES = ("H100", "H200", "A100-80GB", "A100-40GB", "L40S", "A10G", "B200", "CPU")
CPU_GPU_TYPE = "CPU"  # no GPU: the local and sim backends only, one process
CPU_BACKENDS = ("local", "sim")
MAX_GPU_COUNT = 8
Priority = Literal["high", "normal", "low"]
BackendName = Literal["modal", "local", "sim"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)

# nanochat's default repository, cloned by the Modal app and by the local backend when the
# user points it at no checkout of their own.
NANOCHAT_REPO_URL = "https://github.com/karpathy/nanochat.git"
# Hosts a fork's --repo may name unless the operator sets SPEEDQ_REPO_HOSTS.
REPO_HOSTS = ("github.com",)
# A fork's ref when none is given: its default branch (the known-good commit is karpathy's).
FORK_DEFAULT_REF = "HEAD"

MODAL_VOLUME_MOUNT = "/vol"

# Estimated cost for `speedq stats`: USD per GPU-hour by GPU type (Modal's list prices when this
# was written). The setting SPEEDQ_PRICES overrides some or all of them: '{"H100": 3.0}'.
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

# How many recent queue waits per team `stats` takes its median and p95 from.
WAIT_SAMPLES_KEPT = 1000

# About how many points of a run's loss curve the store keeps (the dashboard plots them).
LOSS_POINTS = 1000


# Webhook notifications. A Slack webhook answers in well under a second; a longer wait only
# holds up the worker that delivers, so the timeout is short and RQ retries what it cuts off.
NOTIFY_TIMEOUT_S = 5.0
# Five retries over about 20 minutes: enough to ride out a receiver's restart or deploy.
NOTIFY_MAX_RETRIES = 5
NOTIFY_RETRY_INTERVALS_S = (10, 30, 60, 300, 900)
NOTIFY_KEEP_S = 7 * 24 * 3600  # delivered and given-up notifications stay this long in RQ
