"""From enqueue to the moment the backend's `launch` is called, with one idle `speedq worker`,
against RQ's own enqueue-to-start of a no-op job with one idle plain `rq worker`.

The speedq side runs a benchmark-only backend (benchkit/instant_backend.py) whose calls all
return at once: the sim's launch runs git and a runner process, which is not the queue's cost.
Both workers are RQ's forking worker; jobs go one at a time, each to an idle worker.

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


def rq_baseline(b, conn, jobs: int) -> Samples:  # type: ignore[no-untyped-def]
    b.spawn(RQ_CLI, "worker", "--url", b.redis.url, "bench-noop")
    wait_for(lambda: Worker.count(connection=conn) == 1, what="the rq worker")
    queue = Queue("bench-noop", connection=conn)
    found = []
    for _ in range(jobs + WARMUP):
        sent = time.time()
        job = queue.enqueue("time.time")  # returns the moment the work horse ran it
        wait_for(lambda job=job: job.get_status(refresh=True) == JobStatus.FINISHED, every=0.002, what="the no-op")
        found.append(job.return_value() - sent)
    return Samples(found[WARMUP:])


def speedq_side(b, conn, jobs: int) -> Samples:  # type: ignore[no-untyped-def]
    b.spawn(sys.executable, str(Path(__file__).parent / "benchkit" / "instant_backend.py"))
    wait_for(lambda: Worker.count(connection=conn) == 1, what="the speedq worker")
    store = Store(conn)
    found = []
    for i in range(jobs + WARMUP):
        spec = JobSpec(team="bench", run_name=f"r{i}", backend="sim", mode="smoke")
        sent = time.time()
        job_id = producer.submit(conn, spec).record.id
        record = wait_for(
            lambda job_id=job_id: (r := store.get(job_id)).state.terminal and r, every=0.002, what=f"{job_id}"
        )
        assert record.state.value == "succeeded", record.error
        found.append(launched_at(record.attempts[0].call_id) - sent)
    return Samples(found[WARMUP:])


def main() -> None:
    args = options(__doc__, jobs=40)

    with bench() as b:
        conn = connect(b.redis.url)
        baseline = rq_baseline(b, conn, args.jobs)
        for proc in b.procs:
            proc.terminate()
            proc.wait()
        wait_for(lambda: Worker.count(connection=conn) == 0, what="the rq worker to leave")
        speedq = speedq_side(b, conn, args.jobs)

    print(f"rq enqueue -> no-op start, idle rq worker:       {baseline.ms()}")
    print(f"speedq submit -> backend launch, idle speedq worker: {speedq.ms()}")
    ratio("enqueue to launch (median)", speedq.median, baseline.median, "rq enqueue to start")
    ratio("enqueue to launch (p99)", speedq.p99, baseline.p99, "rq enqueue to start")


if __name__ == "__main__":
    main()
