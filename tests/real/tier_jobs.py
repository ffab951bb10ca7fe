"""The jobs the real-nanochat tier submits: one place for their train args, which both the tests
and the data fixture (how many shards the runner will want) read."""

from __future__ import annotations

# A d2 model on the CPU: runs/runcpu.sh's shape with a shorter context; evals off (they would
# need the eval bundle from the internet, and cost time).
TINY: dict[str, int | str] = {
    "max-seq-len": 128, "device-batch-size": 4, "total-batch-size": 512, "head-dim": 64, "window-pattern": "L",
    "eval-every": -1, "core-metric-every": -1, "sample-every": -1,
}
# 8 micro-batches a step (0.5 s or more here): status polls see some of the first ten steps.
# Validation on (steps 0, 6 and 12, over 8 micro-batches each): the run's results carry its bpb.
FULL = {**TINY, "total-batch-size": 4096, "num-iterations": 12, "eval-every": 6, "eval-tokens": 4096}
SMOKE = TINY  # a smoke job's step count is speedq's own
KILLED_STEPS = 60  # long enough that a SIGKILL lands mid-training after the first save (step 5)
KILLED = {**TINY, "num-iterations": KILLED_STEPS}
MODEL, DEPTH, GPU = "d2", 2, "CPU:1"

JOBS = (("full", FULL), ("smoke", SMOKE), ("full", KILLED))


def flags(args: dict[str, int | str]) -> list[str]:
    """`--train-arg KEY=VALUE` for each of them, as a user types them."""
    return [flag for key, value in args.items() for flag in ("--train-arg", f"{key}={value}")]
