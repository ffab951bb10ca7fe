"""Resident memory of an idle `speedq worker` against an idle plain `rq worker`, both started on
the same redis-server and measured after they settle. A speedq worker also runs RQ's scheduler
(a forked child that puts notification retries back on their queue), so the totals with
children are compared against `rq worker --with-scheduler`. RSS counts pages a fork shares
with its parent twice, so the totals are an upper bound.

    python bench/worker_memory.py
"""

from __future__ import annotations

import time

from benchkit import RQ_CLI, SPEEDQ_CLI, bench, children_of, ratio, rss_mb, wait_for
from rq import Worker

from speedq.connection import connect

SETTLE_S = 3.0


def main() -> None:
    with bench() as b:
        conn = connect(b.redis.url)
        rq_plain = b.spawn(RQ_CLI, "worker", "--url", b.redis.url, "bench-a")
        rq_sched = b.spawn(RQ_CLI, "worker", "--url", b.redis.url, "--with-scheduler", "bench-b")
        speedq = b.spawn(SPEEDQ_CLI, "worker", "--backend", "sim")
        wait_for(lambda: Worker.count(connection=conn) == 3, timeout=60, what="three idle workers")
        time.sleep(SETTLE_S)  # the schedulers fork after registering
        main_mb = {name: rss_mb(p.pid) for name, p in (("rq", rq_plain), ("rq+s", rq_sched), ("speedq", speedq))}
        total_mb = {name: main_mb[name] + sum(rss_mb(c) for c in children_of(p.pid))
                    for name, p in (("rq+s", rq_sched), ("speedq", speedq))}

    print(f"idle rq worker:                    {main_mb['rq']:.1f} MB")
    for label, key in (("rq worker --with-scheduler:  ", "rq+s"), ("speedq worker:               ", "speedq")):
        print(f"idle {label}  {main_mb[key]:.1f} MB (+ scheduler: {total_mb[key]:.1f} MB in all)")
    ratio("idle worker RSS", main_mb["speedq"], main_mb["rq"], "rq worker")
    ratio("idle worker RSS with its scheduler", total_mb["speedq"], total_mb["rq+s"], "rq worker --with-scheduler")


if __name__ == "__main__":
    main()
