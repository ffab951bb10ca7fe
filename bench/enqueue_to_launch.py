"""From enqueue to the moment the backend's `launch` is called, with one idle `speedq worker`,
against RQ's own enqueue-to-start of a no-op job with one idle plain `rq worker`.

The speedq side runs a benchmark-only backend (benchkit/instant_backend.py) whose calls all
return at once: the sim's launch runs git and a runner process, which is not the queue's cost.
Both workers are RQ's forking worker and idle side by side; jobs go one at a time, in turns
(rq, speedq, rq, ...), each to an idle worker.

    python bench/enqueue_to_launch.py [--jobs 40]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchkit import RQ_CLI, Samples, bench, options, ratio, wait_for
from benchkit.instant_backend import launched_at
from rq import Queue, Worker
from rq.job import JobStatus

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec
from speedq.store import Store

WARMUP = 3


def rq_sample(conn, queue: Queue) -> float:  # type: ignore[no-untyped-def]
    sent = time.time()
    job = queue.enqueue("time.time")  # returns the moment the work horse ran it
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, every=0.002, what="the no-op")
    return float(job.return_value()) - sent


def speedq_sample(conn, store: Store, i: int) -> float:  # type: ignore[no-untyped-def]
    spec = JobSpec(team="bench", run_name=f"r{i}", backend="sim", mode="smoke")
    sent = time.time()
    job_id = producer.submit(conn, spec).record.id
    record = wait_for(lambda: (r := store.get(job_id)).state.terminal and r, every=0.002, what=f"{job_id}")
    assert record.state.value == "succeeded", record.error
    return launched_at(record.attempts[0].call_id) - sent


def main() -> None:
    args = options(__doc__, jobs=40)

    with bench() as b:
        conn = connect(b.redis.url)
        # Both workers idle side by side; the samples alternate (rq, speedq, rq, ...) so a burst
        # of other work on the machine lands on both alike.
        b.spawn(RQ_CLI, "worker", "--url", b.redis.url, "bench-noop")
        b.spawn(sys.executable, str(Path(__file__).parent / "benchkit" / "instant_backend.py"))
        wait_for(lambda: Worker.count(connection=conn) == 2, what="the rq and speedq workers")
        queue, store = Queue("bench-noop", connection=conn), Store(conn)
        rq_found, speedq_found = [], []
        for i in range(args.jobs + WARMUP):
            rq_found.append(rq_sample(conn, queue))
            speedq_found.append(speedq_sample(conn, store, i))
        baseline, speedq = Samples(rq_found[WARMUP:]), Samples(speedq_found[WARMUP:])

    print(f"rq enqueue -> no-op start, idle rq worker:       {baseline.ms()}")
    print(f"speedq submit -> backend launch, idle speedq worker: {speedq.ms()}")
    ratio("enqueue to launch (median)", speedq.median, baseline.median, "rq enqueue to start")
    ratio("enqueue to launch (p99)", speedq.p99, baseline.p99, "rq enqueue to start")


if __name__ == "__main__":
    main()
