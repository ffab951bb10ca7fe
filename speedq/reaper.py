"""Jobs of workers that died: found through their expired supervision leases, re-checked, and put
back on their queue so the worker that picks one up reattaches to its running call.

A live supervisor renews its lease every poll (`Store.renew_supervision`), and a worker takes the
lease the moment it pops a job (fair_share), so a job without a live lease past its expiry has
no worker. Each pass reads only the expired leases (one range read on `Keys.held`): its cost
follows the number of dead workers' jobs, not the number of active jobs. Each job is re-checked
inside the transaction that re-queues it: a lease renewed, a job ended or another reaper first
means it is left alone. A finished job whose worker died before tidying up only has its hold
dropped and its running slot freed.
"""

from __future__ import annotations

import logging

import redis
from pydantic import ValidationError

from speedq.producer import enqueue_in
from speedq.schemas import describe
from speedq.store import Store

log = logging.getLogger("speedq.reaper")

# Expired leases handled per pass; the rest wait for the next pass.
BATCH = 100


def reap(conn: redis.Redis, batch: int = BATCH) -> list[str]:
    """One pass over up to `batch` expired holds; returns the ids of the jobs re-queued."""
    store = Store(conn)
    now = store.now()
    rehomed: list[str] = []
    handled = unreadable = 0
    while handled < batch:
        # Past the ones left alone: they keep their place at the front of the expired holds.
        found = store.expired_holds(now, batch - handled, skip=unreadable)
        if not found:
            break
        for job_id in found:
            try:
                record = store.take_over_expired(job_id, now, also=enqueue_in(conn))
            except ValidationError as exc:
                # Written by a newer speedq (a rolling upgrade): left for a worker that can read it.
                log.warning("job %s: its record is not readable by this speedq, left alone: %s", job_id,
                            describe(exc))
                unreadable += 1
                continue
            handled += 1
            if record is not None:
                rehomed.append(job_id)
                log.warning("job %s lost its worker; re-queued as %s to reattach", job_id, record.rq_job_id)
    return rehomed
