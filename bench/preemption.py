"""Steps recomputed per fault: speedq's checkpoint-aware resume vs restart-from-scratch.

A sim full run is preempted at several random steps. The same faults hit two jobs in one run of
this script: one with speedq's default checkpoint interval, and one that, like the old
single-user script, keeps no checkpoint until the end (so every attempt starts from step 0).
Both go through the real CLI, worker, runner and sim nanochat.

    python bench/preemption.py [--model d6] [--faults 3] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import RedisServer, make_speedq


def total_steps(sq, model: str) -> int:  # type: ignore[no-untyped-def]
    """The run's length in steps, from a fault-free run of the same model."""
    job = sq.submit("--team", "probe", "--model", model, "--run-name", "probe")
    record = sq.wait_state(job, "succeeded", "failed", timeout=300)
    return int(record["progress"]["total"])


def run(sq, model: str, faults: list[int], run_name: str, save_every: str | None) -> dict:  # type: ignore[no-untyped-def]
    spec = ",".join(f"preempt@{s}" for s in faults)
    worker = sq.start_worker(env={"SPEEDQ_SIM_FAULTS": spec})
    args = ["--team", "bench", "--model", model, "--run-name", run_name, "--max-attempts", str(len(faults) + 1)]
    if save_every:
        args += ["--save-every", save_every]
    started = time.monotonic()
    job = sq.submit(*args)
    record = sq.wait_state(job, "succeeded", "failed", timeout=600)
    record["wall_s"] = time.monotonic() - started
    sq.kill_worker(worker)
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="d6")
    parser.add_argument("--faults", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        sq = make_speedq(server, Path(tmp))
        sq.env.setdefault("SPEEDQ_SIM_STEP_S", os.environ.get("SPEEDQ_SIM_STEP_S", "0.002"))
        try:
            probe_worker = sq.start_worker()
            total = total_steps(sq, args.model)
            sq.kill_worker(probe_worker)
            rng = random.Random(args.seed)
            faults = sorted(rng.sample(range(2, total - 1), args.faults))
            resumed = run(sq, args.model, faults, "resume", None)
            scratch = run(sq, args.model, faults, "scratch", str(10 * total))
        finally:
            sq.stop_all()
            server.kill()

    for name, record in (("speedq (resume)", resumed), ("restart from scratch", scratch)):
        assert record["state"] == "succeeded", f"{name}: {record['error']}"
    per_fault_speedq = resumed["steps_recomputed"] / len(faults)
    per_fault_scratch = scratch["steps_recomputed"] / len(faults)
    print(f"model {args.model}, {total} steps, preempted at steps {faults} (seed {args.seed})")
    print(f"{'':24}{'recomputed/fault':>18}{'attempts':>10}{'wall s':>9}")
    for name, record, per_fault in (
        ("speedq (resume)", resumed, per_fault_speedq),
        ("restart from scratch", scratch, per_fault_scratch),
    ):
        print(f"{name:24}{per_fault:>18.1f}{len(record['attempts']):>10}{record['wall_s']:>9.1f}")
    ratio = per_fault_scratch / per_fault_speedq if per_fault_speedq else float("inf")
    print(f"ratio: restart-from-scratch recomputes {ratio:.1f}x the steps speedq does per fault")
    print(json.dumps({"faults": faults, "total_steps": total, "speedq_per_fault": per_fault_speedq,
                      "scratch_per_fault": per_fault_scratch, "ratio": ratio}))


if __name__ == "__main__":
    main()
