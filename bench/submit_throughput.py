"""Jobs per second through `producer.submit` (validate-free: specs are built beforehand) against
RQ's own `Queue.enqueue` of a no-op, on the same redis-server, in the same process.

The two take turns call by call (rq, speedq, rq, ...), each call timed, so a burst of other
work on the machine lands on both sides alike; throughput is one over the median call time.

    python bench/submit_throughput.py [--jobs 2000]
"""

from __future__ import annotations

import time

from benchkit import Samples, bench, options, ratio
from rq import Queue

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec


def main() -> None:
    args = options(__doc__, jobs=2000)

    with bench() as b:
        conn = connect(b.redis.url)
        queue = Queue("bench-raw", connection=conn)
        # Distinct run names: the same run twice would be deduplicated, not enqueued.
        specs = [JobSpec(team="bench", run_name=f"r{i}", backend="sim") for i in range(args.jobs)]
        raw, speedq = [], []
        for spec in specs:
            start = time.perf_counter()
            queue.enqueue("os.getpid", job_timeout=-1)
            middle = time.perf_counter()
            producer.submit(conn, spec)
            raw.append(middle - start)
            speedq.append(time.perf_counter() - middle)

    raw_s, speedq_s = Samples(raw), Samples(speedq)
    print(f"rq Queue.enqueue (no-op): {1 / raw_s.median:,.0f} jobs/s; call {raw_s.ms()}")
    print(f"speedq producer.submit:   {1 / speedq_s.median:,.0f} jobs/s; call {speedq_s.ms()}")
    ratio("submit throughput", 1 / speedq_s.median, 1 / raw_s.median, "raw rq enqueue")


if __name__ == "__main__":
    main()
