"""Jobs per second through `producer.submit` (validate-free: specs are built beforehand) against
RQ's own `Queue.enqueue` of a no-op on a plain redis-py client, on the same redis-server, in the
same process. Beside
them, the floor of any submit that keeps a record with its RQ job in one transaction: RQ's
enqueue into a pipeline that also SETs a record as large as speedq's, one MULTI/EXEC (no
claim, no indexes, no budget).

The three take turns call by call (rq, speedq, floor, rq, ...), each call timed, so a burst of other
work on the machine lands on both sides alike; throughput is one over the median call time.

    python bench/submit_throughput.py [--jobs 2000]
"""

from __future__ import annotations

import time

import redis
from benchkit import Samples, bench, options, ratio
from rq import Queue

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec


def main() -> None:
    args = options(__doc__, jobs=2000)

    with bench() as b:
        conn = connect(b.redis.url)
        # RQ as its users run it: on a plain redis-py client, not on speedq's (whose packer is
        # speedq's work, see speedq.connection).
        queue = Queue("bench-raw", connection=redis.Redis.from_url(b.redis.url))
        floor_queue = Queue("bench-floor", connection=conn)
        # Distinct run names: the same run twice would be deduplicated, not enqueued.
        specs = [JobSpec(team="bench", run_name=f"r{i}", backend="sim") for i in range(args.jobs)]
        record = producer.submit(conn, JobSpec(team="bench", run_name="sample", backend="sim")).record
        sample = record.as_stored().encode()
        raw, speedq, floor = [], [], []
        for i, spec in enumerate(specs):
            start = time.perf_counter()
            queue.enqueue("os.getpid", job_timeout=-1)
            middle = time.perf_counter()
            producer.submit(conn, spec)
            end = time.perf_counter()
            with conn.pipeline() as pipe:
                floor_queue.enqueue("os.getpid", job_timeout=-1, pipeline=pipe)
                pipe.set(f"bench:record:{i}", sample)
                pipe.execute()
            raw.append(middle - start)
            speedq.append(end - middle)
            floor.append(time.perf_counter() - end)

    raw_s, speedq_s, floor_s = Samples(raw), Samples(speedq), Samples(floor)
    print(f"rq Queue.enqueue (no-op): {1 / raw_s.median:,.0f} jobs/s; call {raw_s.ms()}")
    print(f"speedq producer.submit:   {1 / speedq_s.median:,.0f} jobs/s; call {speedq_s.ms()}")
    print(f"floor (enqueue + record): {1 / floor_s.median:,.0f} jobs/s; call {floor_s.ms()}")
    ratio("submit throughput", 1 / speedq_s.median, 1 / raw_s.median, "raw rq enqueue")
    ratio("floor: rq enqueue + one record SET, one transaction", 1 / floor_s.median, 1 / raw_s.median,
          "raw rq enqueue")
    ratio("speedq submit against that floor", 1 / speedq_s.median, 1 / floor_s.median, "the floor")


if __name__ == "__main__":
    main()
