"""Draining a deep queue: N jobs queued before any worker starts, then W workers take them all,
against the same number of no-op jobs drained by W plain `rq worker`s.

The speedq side runs the benchmark-only backend (benchkit/instant_backend.py), so each job is the
queue's own cost: pop, lease, supervisor, record writes. It also counts jobs re-queued by the
reaper (an RQ job id other than the job's own) and the longest gap between two starts: with
2,000 queued a worker must never stall between jobs.

    python bench/drain.py [--jobs 2000] [--workers 2]
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from benchkit import RQ_CLI, bench, options, ratio, wait_for
from rq import Queue, Worker

from speedq.connection import connect
from speedq.producer import enqueue_in
from speedq.schemas import JobRecord, JobSpec, JobState
from speedq.store import Store


def rq_drain(b, conn, jobs: int, workers: int) -> float:  # type: ignore[no-untyped-def]
    queue = Queue("bench-drain", connection=conn)
    with conn.pipeline() as pipe:
        for _ in range(jobs):
            queue.enqueue("time.time", pipeline=pipe)
        pipe.execute()
    start = time.monotonic()
    for _ in range(workers):
        b.spawn(RQ_CLI, "worker", "--burst", "--url", b.redis.url, "bench-drain")
    wait_for(lambda: queue.finished_job_registry.count == jobs, timeout=3600, every=0.2, what="rq to drain")
    return jobs / (time.monotonic() - start)


def speedq_drain(b, conn, jobs: int, workers: int) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    store = Store(conn)
    for i in range(jobs):
        spec = JobSpec(team=f"t{i % 5}", run_name=f"r{i}", backend="sim", mode="smoke")
        store.create_claiming_run(spec, also=enqueue_in(conn))
    start = time.monotonic()
    for _ in range(workers):
        b.spawn(sys.executable, str(Path(__file__).parent / "benchkit" / "instant_backend.py"))
    wait_for(lambda: store.count(state=JobState.succeeded) == jobs, timeout=3600, every=0.2, what="speedq to drain")
    rate = jobs / (time.monotonic() - start)
    records: list[JobRecord] = []
    for offset in range(0, jobs, 500):
        records += store.get_many(Store.job_id_for(n) for n in range(offset + 1, min(jobs, offset + 500) + 1))
    requeued = sum(r.rq_job_id != r.id for r in records)
    starts = sorted(r.attempts[0].started_at for r in records)
    gap = max((b_ - a for a, b_ in itertools.pairwise(starts)), default=0.0)
    return rate, requeued, gap


def main() -> None:
    args = options(__doc__, jobs=2000, workers=2)
    with bench() as b:
        conn = connect(b.redis.url)
        baseline = rq_drain(b, conn, args.jobs, args.workers)
        for proc in b.procs:
            proc.wait()
        wait_for(lambda: Worker.count(connection=conn) == 0, what="the rq workers to leave")
        rate, requeued, gap = speedq_drain(b, conn, args.jobs, args.workers)
    print(f"rq: {args.jobs} no-op jobs, {args.workers} workers: {baseline:.1f} jobs/s")
    print(f"speedq: {args.jobs} instant jobs, {args.workers} workers: {rate:.1f} jobs/s; "
          f"re-queued by the reaper: {requeued}; longest gap between two starts: {gap * 1e3:.0f} ms")
    ratio("drain rate", rate, baseline, "rq workers draining no-op jobs")


if __name__ == "__main__":
    main()
