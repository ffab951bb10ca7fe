"""The plain container-side code of speedq's Modal app (speedq/gpu/modal_app.py, whose doc tells
what an attempt's container does): no `modal` here, so tests run it in-process with a temporary
directory standing in for /vol, and modal_app's functions are thin shells over it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from speedq import config
from speedq.backends.modal_data import marker_covers, shards_for
from speedq.gpu import layout, offload
from speedq.schemas import JobSpec, Mode, Outcome, RunRequest, RunResult

log = logging.getLogger("speedq.modal_app")  # the logger these lines always came from

VOLUME_MOUNT = config.MODAL_VOLUME_MOUNT
DEFAULT_GPU = config.DEFAULT_GPU  # "H100:8"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# Container-local disk: the run, its data and every cache a stage writes live here while it runs.
LOCAL_ROOT = "/tmp/speedq"
# What crosses Modal's boundary: a RunRequest or RunResult as JSON data (the other side validates it).
WireData = dict[str, Any]


def gpu_parts(gpu: str) -> tuple[str, int]:
    kind, _, count = gpu.partition(":")
    return kind, int(count or 1)


def request_for(
    *,
    mode: Mode,
    model: str,
    repo_ref: str,
    force_restart: bool,
    team: str,
    run_name: str,
    job_id: str,
    gpu: str = DEFAULT_GPU,
    root: str = VOLUME_MOUNT,
    repo: str = config.NANOCHAT_REPO_URL,
) -> RunRequest:
    """The RunRequest for a `modal run` from the command line (validated like a submitted job).

    `job_id` must stay the same when Modal restarts the same input (the call id does), so that a
    force restart wipes the run once, not again after a preemption.
    """
    spec = JobSpec.model_validate({
        "team": team,
        "model": model,
        "repo_ref": repo_ref,
        "mode": mode,
        "force_restart": force_restart,
        "gpu": gpu,
        "run_name": run_name or None,
        "backend": "modal",
    })
    kind, count = gpu_parts(str(spec.gpu))
    base = PurePosixPath(root)
    return RunRequest(
        job_id=job_id,
        attempt=1,
        model=spec.model,
        mode=spec.mode,
        nproc=count,
        gpu_type=kind,
        commit=spec.repo_ref,  # pinned to a commit by execute() before the runner sees it
        repo=repo,
        run_dir=str(base / "runs" / layout.run_relpath(spec.team, spec.run_name or "")),
        data_dir=str(base / "data"),
        cache_dir=str(base / "cache"),
        launcher="torchrun",
        force_restart=spec.force_restart,
    )


def parse_request(request: str | WireData | RunRequest) -> RunRequest:
    if isinstance(request, RunRequest):
        return request
    if isinstance(request, dict):
        return RunRequest.model_validate(request)
    return RunRequest.model_validate_json(request)


def prepared_marker(req: RunRequest) -> Path:
    return Path(req.data_dir) / layout.prepared_marker_name(req.commit)


def data_ready(req: RunRequest) -> bool:
    """Prepared for this commit with at least as many shards as this run needs."""
    try:
        raw = prepared_marker(req).read_bytes()
    except OSError:
        return False
    return marker_covers(raw, req.commit, shards_for(req))


def pin_commit(req: RunRequest) -> RunRequest:
    """A request naming a branch or tag gets the commit it points at now (the CLI path)."""
    if _COMMIT_RE.fullmatch(req.commit):
        return req
    from speedq.gpu import runner

    return req.model_copy(update={"commit": runner.resolve_commit(req.repo, req.commit)})


def prepare(req: RunRequest, commit_volume: Callable[[], None] = lambda: None) -> bool:
    """Dataset shards and tokenizer into req.data_dir for its commit and shard count. True if it ran."""
    req = pin_commit(req)
    if data_ready(req):
        return False
    from speedq.gpu import runner

    try:
        runner.prepare_data(req)
        marker = prepared_marker(req)
        marker.parent.mkdir(parents=True, exist_ok=True)
        runner.write_json_atomic(marker, json.dumps({"commit": req.commit, "shards": shards_for(req)}))
    finally:
        commit_volume()
    return True


def announce(run_dir: Path, attempt: int, call_id: str | None) -> None:
    """This container's first act: who runs this attempt, where a worker can find it."""
    from speedq.gpu import runner

    run_dir.mkdir(parents=True, exist_ok=True)
    body = {"attempt": attempt, "call_id": call_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.time()}
    runner.write_json_atomic(run_dir / layout.announce_name(attempt), json.dumps(body))


def claim(run_dir: Path, attempt: int, call_id: str | None) -> int | None:
    """Claim the Volume's run dir for `attempt` (and this call); the newer attempt holding it, if
    one does. Another call of the same attempt is overtaken: the latest claim of an attempt wins,
    so the call the worker was told about outlives one the client's retried spawn left behind."""
    from speedq.gpu import runner

    held = offload.read_claim(run_dir)
    if held is not None and held > attempt:
        return held
    runner.write_json_atomic(run_dir / layout.CLAIM, json.dumps({"attempt": attempt, "call_id": call_id}))
    return None


def stop_stages(local_root: Path) -> None:
    """End this process's descendants working in `local_root` (the runner's stages, torchrun and
    its ranks): a superseded container must not keep its GPUs busy. The runner then sees its stage
    fail and ends; nothing more is copied to the Volume."""
    import signal

    from speedq.gpu import proctree

    found = proctree.descendants(os.getpid())
    for pid in found:
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(local_root):
                os.kill(pid, signal.SIGKILL)
        except OSError:  # gone already
            pass


def local_request(req: RunRequest, local_root: Path) -> RunRequest:
    """The same attempt with its run, data and cache on container-local disk."""
    return req.model_copy(update={
        "run_dir": str(local_root / "run"), "data_dir": str(local_root / "data"),
        "cache_dir": str(local_root / "cache"),
    })


def _fenced(req: RunRequest, held: int) -> WireData:
    outcome = Outcome.fenced
    error = (f"attempt {held} (another call) holds the run directory" if held == req.attempt else
             f"attempt {held} holds the run directory") + f"; attempt {req.attempt} stopped without writing"
    log.warning(error)
    return RunResult(job_id=req.job_id, attempt=req.attempt, outcome=outcome, error=error).model_dump(mode="json")


def _run(req: RunRequest, on_checkpoint: Callable[[], None], call_id: str | None) -> RunResult:
    """runner.run with the call id it announces (speedq/gpu/fence.py)."""
    from speedq.gpu import runner

    return runner.run(req, on_checkpoint=on_checkpoint, call_id=call_id)


def execute(
    request: str | WireData | RunRequest,
    *,
    commit_volume: Callable[[], None] = lambda: None,
    reload_volume: Callable[[], None] = lambda: None,
    call_id: str | None = None,
    local_root: str = LOCAL_ROOT,
) -> WireData:
    """One attempt inside the container (see the module doc); returns a RunResult dict."""
    from speedq.gpu import runner

    def commit() -> None:  # the body's own commits: a failure is logged, the attempt goes on
        try:
            commit_volume()
        except Exception as exc:  # noqa: BLE001
            log.warning("volume commit failed: %s", exc)

    req = parse_request(request)
    volume_run = Path(req.run_dir)
    announce(volume_run, req.attempt, call_id)
    commit()
    req = pin_commit(req)
    if runner.force_restart(req):  # wiped the Volume's run dir (once per job): announce again
        announce(volume_run, req.attempt, call_id)
    try:
        reload_volume()  # the newest claim another container committed
    except Exception as exc:  # noqa: BLE001
        log.warning("volume reload failed: %s", exc)
    held = claim(volume_run, req.attempt, call_id)
    commit()
    if held is not None:
        return _fenced(req, held)
    local = local_request(req, Path(local_root))
    ckpt_rel = Path(layout.checkpoint_dir(req.model, req.mode))
    resume = offload.fetch(volume_run, Path(local.run_dir), ckpt_rel, req.nproc)
    log.info("fetched the run from the Volume (newest complete checkpoint: %s)", resume)
    if not data_ready(req):  # a worker prepares first; `modal run` from the command line may not
        log.warning("data for %s is not prepared on the Volume: preparing it here, on the GPU box", req.commit)
        prepare(req, commit)
    if not offload.fetch_data(Path(req.data_dir), Path(local.data_dir), shards_for(req)):
        error = (f"the Volume's data for {req.commit} is marked prepared with {shards_for(req)} shards, "
                 f"but files are missing under {req.data_dir}: run prepare_data again")
        log.error(error)
        crashed = RunResult(job_id=req.job_id, attempt=req.attempt, outcome=Outcome.crashed, error=error)
        return crashed.model_dump(mode="json")
    offloader = offload.Offloader(
        local_run=Path(local.run_dir), volume_run=volume_run, ckpt_rel=ckpt_rel, world_size=req.nproc,
        attempt=req.attempt, commit=commit_volume, reload=reload_volume, save_every=runner.save_every_for(req),
        call_id=call_id, on_superseded=lambda: stop_stages(Path(local_root)),
    ).start()
    try:
        result = _run(local, offloader.request, call_id)
    finally:
        offloader.close()
    if offloader.superseded_by is not None:  # its stages were stopped: say why, not "crashed"
        return _fenced(req, offloader.superseded_by)
    if result.outcome is not Outcome.succeeded:
        log.warning("attempt %s of %s ended %s: %s", req.attempt, req.job_id, result.outcome.value, result.error)
    return result.model_dump(mode="json")

