"""GPU-hours a broken fork costs with and without the preflight (issue 12), on the sim.

A fork whose change breaks training at step k (every run: a code bug, not a fault that passes on
retry) is submitted as an 8-GPU full run, with its 20-step one-GPU preflight and with
`--no-preflight`, in turns. Without one, each of the job's attempts starts 8 GPUs, resumes, and
crashes at step k again until its attempts run out; with one, a crash before step 20 ends the job
on one GPU. A crash after step 20 the preflight cannot catch: its cost is then pure overhead,
printed too. GPU-hours are what speedq records (each attempt's GPU count x duration), through the
real CLI, worker, runner and sim nanochat.

    python bench/preflight.py [--rounds 2] [--early 7] [--late 40] [--attempts 3]
"""

from __future__ import annotations

import os

from benchkit import bench, options, ratio

from tests.conftest import Speedq, make_speedq
from tests.sim_forks import broken_fork


def gpu_hours(sq: Speedq, branch: str, run_name: str, preflight: bool, attempts: int) -> float:
    job = sq.submit("--team", "bench", "--model", "d6", "--gpu", "H100:8", "--repo-ref", branch,
                    "--run-name", run_name, "--max-attempts", str(attempts), preflight=preflight)
    record = sq.wait_state(job, "succeeded", "failed", timeout=600)
    assert record["state"] == "failed", f"{run_name}: the broken fork succeeded"
    return float(record["gpu_seconds"]) / 3600


def main() -> None:
    args = options(__doc__, rounds=2, early=7, late=40, attempts=3)
    with bench() as b:
        sq = make_speedq(b.redis, b.home)
        sq.env["SPEEDQ_SIM_STEP_S"] = os.environ.get("SPEEDQ_SIM_STEP_S", "0.02")
        broken_fork(sq.home, "crash-early", args.early)
        broken_fork(sq.home, "crash-late", args.late)
        worker = sq.start_worker()
        try:
            # the data, tokenizer and both checkouts first, so no measured job pays for them
            for branch in ("crash-early", "crash-late"):
                sq.wait_state(sq.submit("--team", "warm", "--smoke", "--repo-ref", branch, "--max-attempts", "1"),
                              "succeeded", "failed", timeout=300)
            spent: dict[tuple[str, bool], float] = {}
            for n in range(args.rounds):
                for branch in ("crash-early", "crash-late"):
                    for preflight in (True, False) if n % 2 == 0 else (False, True):  # in turns
                        name = f"{branch}-{'pre' if preflight else 'nopre'}-{n}"
                        hours = gpu_hours(sq, branch, name, preflight, args.attempts)
                        spent[branch, preflight] = spent.get((branch, preflight), 0.0) + hours
        finally:
            sq.kill_worker(worker)
            sq.stop_all()

    print(f"d6 on H100:8 (sim), {args.attempts} attempts a job, {args.rounds} rounds; GPU-hours summed over rounds")
    print(f"{'fork':36}{'with preflight':>16}{'without':>12}")
    for branch, step in (("crash-early", args.early), ("crash-late", args.late)):
        label = f"{branch} (crashes at step {step})"
        print(f"{label:36}{spent[branch, True]:>16.5f}{spent[branch, False]:>12.5f}")
    ratio(f"GPU-hours on a fork crashing at step {args.early}, without preflight",
          spent["crash-early", False], spent["crash-early", True], "with preflight")
    ratio(f"GPU-hours on a fork crashing at step {args.late} (past the preflight), with preflight",
          spent["crash-late", True], spent["crash-late", False], "without")


if __name__ == "__main__":
    main()
