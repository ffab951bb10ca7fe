"""`status` and `ls` latency through the store calls the CLI makes (`Store.get`, `Store.list`),
with 1,000 job records against 100,000: the ratio shows whether they grow with the data.

Both sets live on one redis-server (databases 0 and 1) and are sampled in turns, so load from
anything else on the machine falls on both alike.

    python bench/status_ls_latency.py [--small 1000] [--large 100000]
"""

from __future__ import annotations

import random
import time

from benchkit import Samples, bench, options, ratio

from speedq.schemas import JobRecord, JobSpec, JobState, ListQuery
from speedq.store import Store

TEAMS = [f"team{i}" for i in range(10)]
STATES = list(JobState)
QUERIES = [ListQuery(), ListQuery(team="team3"), ListQuery(state="running"), ListQuery(team="team7", state="failed")]
SAMPLES = 2000


def load(store: Store, count: int) -> None:
    """`count` records, pipelined 5,000 at a time."""
    rng = random.Random(count)
    batch: list[JobRecord] = []
    for n in range(count):
        spec = JobSpec(team=rng.choice(TEAMS), run_name=f"r{n}", backend="sim")
        batch.append(JobRecord(id=f"sq-{n}", spec=spec, state=rng.choice(STATES), created_at=1e9 + n))
        if len(batch) == 5000:
            store.put_many(batch)
            batch = []
    store.put_many(batch)



def sample_in_turns(stores: dict[int, Store]) -> dict[int, tuple[Samples, Samples]]:
    rng = random.Random(0)
    found: dict[int, tuple[list[float], list[float]]] = {count: ([], []) for count in stores}
    for _ in range(SAMPLES):
        for count, store in stores.items():
            job_id, query = f"sq-{rng.randrange(count)}", rng.choice(QUERIES)
            start = time.perf_counter()
            store.get(job_id)
            mid = time.perf_counter()
            store.list(query)
            found[count][0].append(mid - start)
            found[count][1].append(time.perf_counter() - mid)
    return {count: (Samples(s), Samples(ls)) for count, (s, ls) in found.items()}


def main() -> None:
    args = options(__doc__, small=1_000, large=100_000)

    with bench() as b:
        figures = sample_in_turns(b.two_sizes(args.small, args.large, load))

    for count, (status, ls) in figures.items():
        print(f"{count:>7,} records: status {status.ms()}; ls (20 rows) {ls.ms()}")
    (small_status, small_ls), (large_status, large_ls) = figures[args.small], figures[args.large]
    ratio(f"status latency at {args.large:,} records", large_status.median, small_status.median, f"at {args.small:,}")
    ratio(f"ls latency at {args.large:,} records", large_ls.median, small_ls.median, f"at {args.small:,}")


if __name__ == "__main__":
    main()
