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
# A full run on more than one GPU first runs this many steps of the same commit and options on one
# GPU (its preflight), evals off. A constant, not a setting: enough steps to pass compilation, the
# first optimizer steps and a checkpoint save (at half of them), which is where a broken fork or an
# out-of-memory device batch fails; the record keeps the count each job's preflight ran with.
PREFLIGHT_STEPS = 20

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

# Cost preview: a run's GPU-hours are estimated from the team's own succeeded runs of the same
# model, mode and GPU type (the median GPU-seconds per training token of the last
# ESTIMATE_HISTORY_KEPT, times this run's tokens), else from this table:
#   GPU-seconds = tokens x FLOPs per token / (peak bf16 FLOP/s x ESTIMATE_MFU)
#                 + ESTIMATE_OVERHEAD_S[mode] x GPU count
# Peak bf16 FLOP/s per GPU are nanochat's own (nanochat/common.py get_peak_flops); A10G, which it
# does not list, is NVIDIA's A10 sheet (125 TFLOP/s dense), and CPU a nominal 1 TFLOP/s.
ESTIMATE_PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100-80GB": 312e12,
    "A100-40GB": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "B200": 2.25e15,
    "CPU": 1e12,
}
# nanochat's d24 record (dev/LEADERBOARD.md, March 2026): 1.65 h on 8xH100 with fp8, about 59%
# of the bf16 peak; 50% leaves room for runs without fp8 and smaller models.
ESTIMATE_MFU = 0.5
# What a run spends besides base training's steps: container start, compile, the data and
# tokenizer stages; a full run also base_eval (CORE), chat_sft and chat_eval. Wall seconds.
ESTIMATE_OVERHEAD_S = {"smoke": 10 * 60, "full": 45 * 60}
ESTIMATE_HISTORY_KEPT = 20  # succeeded runs per (team, backend, model, mode, GPU type)
# The most GPU-seconds one job may be estimated at, whatever its team's budget: some 30,000
# GPU-years. Reservations are Redis integers (64-bit), and a team's sums many jobs'; an estimate
# from a team's history scales the past runs' rate by this run's tokens, so no train-arg limit
# bounds it alone.
MAX_JOB_GPU_SECONDS = 10**12
# A dry run resolves the ref the way a worker will; without an answer in this long (no network),
# it says so instead of waiting on git.
PREVIEW_RESOLVE_TIMEOUT_S = 10.0
# A worker pins the ref while renewing the job's lease, so a hung git or Modal call would hold the
# job for ever: past this (well above the backends' own bounds) the job fails, saying so.
RESOLVE_TIMEOUT_S = 300.0

# How many recent queue waits per team `stats` takes its median and p95 from.
WAIT_SAMPLES_KEPT = 1000
# Doorbell rings kept while no worker waits on them (fair_share): enough to wake every idle worker.
DOORBELL_KEPT = 1000

# About how many points of a run's loss curve the store keeps (the dashboard plots them).
LOSS_POINTS = 1000


# Webhook notifications. A Slack webhook answers in well under a second; a longer wait only
# holds up the worker that delivers, so the timeout is short and RQ retries what it cuts off.
NOTIFY_TIMEOUT_S = 5.0
# Five retries over about 20 minutes: enough to ride out a receiver's restart or deploy.
NOTIFY_MAX_RETRIES = 5
NOTIFY_RETRY_INTERVALS_S = (10, 30, 60, 300, 900)
NOTIFY_KEEP_S = 7 * 24 * 3600  # delivered and given-up notifications stay this long in RQ
