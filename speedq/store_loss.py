"""The loss-curve half of the Redis layout: each job's base-training loss points, a capped list
of "step:loss:time" entries. `Store` inherits `LossStore`; callers use `Store`."""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable

import redis

from speedq import config
from speedq.connection import text
from speedq.keys import Keys
from speedq.schemas import LossPoint, Progress
from speedq.store_apply import Script

# Append a loss point "step:loss:time" if it is at least ARGV[3] steps past the last one kept
# (the final step, ARGV[5], needs only to be past it), then cap the list at ARGV[4]. A resumed
# attempt replays steps the curve already has: those are skipped, so each step appears once, the
# first time the run reached it.
_APPEND_LOSS = Script("""
local last = redis.call('lindex', KEYS[1], -1)
if last then
  local step = tonumber(string.match(last, '^(-?%d+):'))
  local gap = tonumber(ARGV[1]) == tonumber(ARGV[5]) and 1 or tonumber(ARGV[3])
  if tonumber(ARGV[1]) < step + gap then return 0 end
end
redis.call('rpush', KEYS[1], ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[6])
redis.call('ltrim', KEYS[1], -tonumber(ARGV[4]), -1)
return 1
""")


class LossStore:
    """Store's loss curves (see the module docstring)."""

    conn: redis.Redis

    def append_loss(self, job_id: str, progress: Progress) -> bool:
        """Add the progress's step and loss to the job's loss curve; False if it has none, or it
        is too close to the last point kept. Points closer than total/LOSS_POINTS steps are
        skipped, so a long run keeps about LOSS_POINTS; the list is capped at twice that."""
        if progress.step is None or progress.loss is None or not math.isfinite(progress.loss):
            return False  # a diverged run's nan has no place on a plot; its log says what happened
        gap = max(1, (progress.total or 0) // config.LOSS_POINTS)
        return bool(_APPEND_LOSS.run(
            self.conn, (Keys.loss_history(job_id),),
            progress.step, repr(progress.loss), gap, 2 * config.LOSS_POINTS, progress.total or -1,
            repr(progress.updated_at),
        ))

    def loss_history(self, job_id: str) -> builtins.list[LossPoint]:
        return [_loss_point(text(e)) for e in self.conn.lrange(Keys.loss_history(job_id), 0, -1)]

    def loss_histories(self, job_ids: Iterable[str]) -> builtins.list[builtins.list[LossPoint]]:
        """Several jobs' loss curves in one round trip, in the order given."""
        with self.conn.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lrange(Keys.loss_history(job_id), 0, -1)
            return [[_loss_point(text(e)) for e in entries] for entries in pipe.execute()]


def _loss_point(entry: str) -> LossPoint:
    """"step:loss:time", or "step:loss" as stored before points kept their time."""
    step, loss, *when = entry.split(":")
    return LossPoint(step=int(step), loss=float(loss), t=float(when[0]) if when else None)
