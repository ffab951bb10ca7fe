"""The worker process: an RQ worker that takes teams' jobs in turn and reaps orphaned jobs
between them. The jobs it runs are `speedq.worker.supervise`.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Iterable

import redis
from rq import Queue

import speedq.worker  # by module: benchmarks swap speedq.worker.backend_named before start
from speedq import reaper, settings, worker_base, worker_name
from speedq.fair_share import FairDequeue, plan
from speedq.store import Store

log = logging.getLogger("speedq.worker")  # the logger the worker's lines always came from


def _settle_heap() -> None:
    """Once the imports are done: collect, freeze what survived (each work horse is a fork, and a
    frozen object is never written by the collector, so its pages stay shared), and hand the
    heap freed by start-up back to the OS (glibc only), so an idle worker holds less."""
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the freed heap stays with the process


def worker_queues(conn: redis.Redis, backends: Iterable[str]) -> list[Queue]:
    """The notify queue and every known team's queues; the worker refreshes this list before each
    dequeue (see fair_share.plan for the order it takes them in)."""
    store = Store(conn)
    current = plan(store.team_loads(store.team_names()), tuple(backends))
    return [Queue(name, connection=conn) for name in current.names]


class SpeedqWorker(FairDequeue):
    """An RQ worker that takes teams' jobs in turn (fair_share) and also re-homes jobs orphaned
    by dead workers, between jobs."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # RQ leaves it unannotated
        try:
            reaper.reap(self.connection)
        except redis.RedisError as exc:
            self.log.warning("reaper skipped: %s", exc)


def run_worker(conn: redis.Redis, backends: list[str], burst: bool = False, name: str | None = None) -> bool:
    for backend in backends:
        speedq.worker.backend_named(backend).check()  # fail at start, in one line, not on the first job
    reap_every = settings.get().reap_interval
    name = name or worker_name.default_name()  # readable in `status` and `rq info`
    worker_name.free_name(conn, name, say=log.warning)
    worker = SpeedqWorker(
        worker_queues(conn, backends),
        connection=conn,
        name=name,
        worker_ttl=int(reap_every) + 15,  # RQ blocks on the queue for worker_ttl - 15 s
        maintenance_interval=int(reap_every),
    )
    worker.speedq_backends = tuple(backends)
    worker.speedq_lease_s = worker_base.heartbeat_ttl_s()
    speedq.worker.build_job_models()  # once here, not in every work horse
    _settle_heap()
    # The scheduler (a child process) puts notification retries back on their queue when due.
    return worker.work(burst=burst, logging_level=settings.get().log_level, with_scheduler=True)
