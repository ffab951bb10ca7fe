"""`leaderboard` latency through the call the CLI and the API make (`leaderboard.leaderboard`),
with 1,000 finished runs against 50,000: the ratio shows whether a board read grows with the
jobs stored (it should not: it reads its index, then its rows). Both sets hold the same 400 runs
that beat GPT-2 (so both boards show the same rows) among runs that do not; four queries: none,
a model, a team, both.

Both sets live on one redis-server (databases 0 and 1) and are sampled in turns, so load from
anything else on the machine falls on both alike.

    python bench/leaderboard_latency.py [--small 1000] [--large 50000]
"""

from __future__ import annotations

import random
import time

from benchkit import Samples, bench, options, ratio

from speedq.leaderboard import leaderboard
from speedq.schemas import JobRecord, JobSpec, JobState, LeaderboardQuery, RunResults
from speedq.store import Store

TEAMS = [f"team{i}" for i in range(10)]
MODELS = ["d20", "d24", "d26", "d32"]
QUERIES = [LeaderboardQuery(), LeaderboardQuery(model="d24"), LeaderboardQuery(team="team3"),
           LeaderboardQuery(model="d26", team="team7")]
SAMPLES = 1000


QUALIFYING = 400


def finished(n: int, rng: random.Random, qualifies: bool) -> JobRecord:
    spec = JobSpec(team=rng.choice(TEAMS), model=rng.choice(MODELS), run_name=f"r{n}", backend="modal")
    results = RunResults(
        training_time_s=rng.uniform(9_000, 12_000), core_metric=0.26 if qualifies else 0.24,
        min_val_bpb=rng.uniform(0.72, 0.80), steps=5_000, tokens=5_000 * 2**20, mode="full", model=spec.model,
        gpu_type="H100", gpu_count=8, gpu_hours=24.0, cost_usd=94.8,
    )
    return JobRecord(id=f"sq-{n}", spec=spec, state=JobState.succeeded, created_at=1e9 + n,
                     nanochat_commit="92d63d4e8bb4df75c3b71618f31ddde2378b2bcd", results=results)


def load(store: Store, count: int) -> None:
    """`count` finished runs, the first QUALIFYING alike in every set, pipelined 5,000 at a time
    through the store's write (indexes too)."""
    rng = random.Random(0)
    for start in range(0, count, 5000):
        store.put_many(finished(n, rng, n < QUALIFYING) for n in range(start, min(count, start + 5000)))



def sample_in_turns(stores: dict[int, Store]) -> dict[int, Samples]:
    rng = random.Random(0)
    found: dict[int, list[float]] = {count: [] for count in stores}
    for _ in range(SAMPLES):
        query = rng.choice(QUERIES)
        for count, store in stores.items():
            start = time.perf_counter()
            board = leaderboard(store, query)
            found[count].append(time.perf_counter() - start)
            assert board.time_to_gpt2 and board.best_bpb
    return {count: Samples(s) for count, s in found.items()}


def main() -> None:
    args = options(__doc__, small=1_000, large=50_000)

    with bench() as b:
        figures = sample_in_turns(b.two_sizes(args.small, args.large, load))

    for count, samples in figures.items():
        print(f"{count:>7,} runs: leaderboard {samples.ms()}")
    ratio(f"leaderboard latency at {args.large:,} runs", figures[args.large].median, figures[args.small].median,
          f"at {args.small:,}")


if __name__ == "__main__":
    main()
