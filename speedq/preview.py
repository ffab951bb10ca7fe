"""`submit --dry-run`: what a submit of this spec would do, with nothing stored.

It runs the submit's own steps up to the transaction: the spec's validation (done by the caller,
through the same schemas), the estimate (`producer.estimate_for`), the quota and budget check
(`producer.admit`, here reporting its refusal instead of raising it), and the ref resolved the
way a worker pins it at the first attempt. Reads only.
"""

from __future__ import annotations

from pathlib import Path

import redis

from speedq import config, estimate, producer, settings
from speedq.errors import QuotaExceeded
from speedq.schemas import JobSpec, Preview
from speedq.schemas import repo as repos
from speedq.store import Store

HEX40_CHARS = frozenset("0123456789abcdef")


def preview(conn: redis.Redis, spec: JobSpec) -> Preview:
    store = Store(conn)
    cost = producer.estimate_for(store, spec)
    team, usage = store.team(spec.team), store.team_usage(spec.team)
    holder = store.run_holder(spec)
    refusal = None
    if holder is None:  # else the submit returns that job, checking nothing
        try:
            producer.admit(team, usage, cost.gpu_seconds)
        except QuotaExceeded as exc:
            refusal = str(exc)
    commit, note = resolve(spec)
    sizing = spec.sizing()
    return Preview(
        spec=spec, commit=commit, commit_note=note, steps=sizing.num_iterations, tokens=sizing.train_tokens,
        estimate=cost, budget=estimate.budget(team, usage.gpu_seconds, usage.reserved_s), refusal=refusal,
        active_job=holder.id if holder is not None else None,
    )


def resolve(spec: JobSpec) -> tuple[str | None, str | None]:
    """The commit the job's ref names now, as its backend resolves it, else None and why."""
    ref = spec.repo_ref
    if spec.backend != "sim" and len(ref) == 40 and set(ref.lower()) <= HEX40_CHARS:
        return ref.lower(), None  # already a commit: what the worker pins (the sim maps its own)
    if settings.get().offline and _needs_network(spec):
        return None, f"{ref!r} not resolved: SPEEDQ_OFFLINE=1 and resolving it needs the network (a worker pins it)"
    from speedq.backends import BackendError, get_backend
    from speedq.threads import in_thread

    try:
        backend = get_backend(spec.backend)
        return in_thread(lambda: backend.resolve_ref(ref, spec.repo), config.PREVIEW_RESOLVE_TIMEOUT_S), None
    except TimeoutError:
        return None, (f"{ref!r} not resolved: no answer in {config.PREVIEW_RESOLVE_TIMEOUT_S:g}s "
                      "(no network?); a worker pins it at the first attempt")
    except BackendError as exc:
        return None, str(exc)


def _needs_network(spec: JobSpec) -> bool:
    if spec.backend == "sim":
        return False
    if spec.backend == "local":  # a local checkout stands in for karpathy's repository only
        return not (repos.is_default(spec.repo) and Path(settings.get().nanochat_repo or "").is_dir())
    return True
