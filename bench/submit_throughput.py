"""Jobs per second through `producer.submit` (validate-free: specs are built beforehand) against
RQ's own `Queue.enqueue` of a no-op, on the same redis-server, in the same process.

    python bench/submit_throughput.py [--jobs 2000]
"""

from __future__ import annotations

import time

from benchkit import bench, options, ratio
from rq import Queue

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec


def per_second(action, count: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for i in range(count):
        action(i)
    return count / (time.perf_counter() - start)


def main() -> None:
    args = options(__doc__, jobs=2000)

    with bench() as b:
        conn = connect(b.redis.url)
        queue = Queue("bench-raw", connection=conn)
        # Distinct run names: the same run twice would be deduplicated, not enqueued.
        specs = [JobSpec(team="bench", run_name=f"r{i}", backend="sim") for i in range(args.jobs)]
        raw = per_second(lambda i: queue.enqueue("os.getpid", job_timeout=-1), args.jobs)
        speedq = per_second(lambda i: producer.submit(conn, specs[i]), args.jobs)

    print(f"rq Queue.enqueue (no-op): {raw:,.0f} jobs/s")
    print(f"speedq producer.submit:   {speedq:,.0f} jobs/s")
    ratio("submit throughput", speedq, raw, "raw rq enqueue")


if __name__ == "__main__":
    main()
