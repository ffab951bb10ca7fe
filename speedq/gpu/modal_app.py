"""speedq's GPU-side Modal app: `modal deploy speedq/gpu/modal_app.py`.

Functions (workers spawn them by name; people run them with `modal run`):
- `run_speedrun`  the full speedrun, default H100:8, up to 24 h per attempt
- `test_10_steps` the 10-step smoke test
- `prepare_data`  CPU only: dataset shards and tokenizer into /vol/data (the worker runs it to
                  completion before any GPU spawn; its marker names the commit and the shard count)
- `resolve_ref`   CPU only: pin a nanochat ref to a commit (the backend's fallback without git)

The old single-user commands still work:
    modal run speedq/gpu/modal_app.py::test_10_steps --model d12 --repo-ref master
    modal run speedq/gpu/modal_app.py::run_speedrun --model d12 --repo-ref master [--force-restart]
`modal run FILE::fn` calls the function remotely with its typed parameters as `--options`; a worker
spawns the same function with `request=<RunRequest JSON>` (and its GPU via `with_options`).

Volume layout (the SPEEDQ_MODAL_VOLUME setting, at /vol): runs in /vol/runs/<team>/<run-name>/, shared
data in /vol/data/, caches (nanochat checkouts per commit, compile caches) in /vol/cache/.

An attempt's container (`execute`):
1. announces itself in the Volume's run directory as its first act (attempt-<n>.json with its call
   id), so a worker that never got the spawn's answer can find the call;
2. claims the run directory on the Volume with its attempt number (a newer claim there: it stops);
3. works on container-local disk: the run's files and newest complete checkpoint are fetched from
   the Volume, the prepared shards and tokenizer copied, and the runner runs there (cwd, the open
   log, checkpoints all local: a Volume commit reloads, which open files in the Volume refuse);
4. speedq/gpu/offload.py copies each complete checkpoint and the run's files to the Volume and
   commits in the background, so no save waits on the network.

Everything real happens in plain functions (`request_for`, `execute`, `prepare`) so tests run them
in-process with a temporary directory standing in for /vol. Modal restarts a preempted function on
the same input by itself; the body is safe to start again (the runner resumes from the newest
complete checkpoint, and a force restart wipes the run once per job id, which stays the same).
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

import modal

from speedq import config, settings
from speedq.backends.modal import PREPARE_TIMEOUT_S, SMOKE_TIMEOUT_S
from speedq.backends.modal_data import marker_covers, shards_for
from speedq.gpu import layout, offload
from speedq.schemas import JobSpec, Mode, Outcome, RunRequest, RunResult

log = logging.getLogger("speedq.modal_app")

VOLUME_MOUNT = config.MODAL_VOLUME_MOUNT
DEFAULT_GPU = config.DEFAULT_GPU  # "H100:8"
RUN_TIMEOUT_S = config.MAX_ATTEMPT_TIMEOUT_S  # 24 h, Modal's ceiling
CLI_TEAM = "default"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# Container-local disk: the run, its data and every cache a stage writes live here while it runs.
LOCAL_ROOT = "/tmp/speedq"
# What crosses Modal's boundary: a RunRequest or RunResult as JSON data (the other side validates it).
WireData = dict[str, Any]

# torch from the PyTorch CUDA 12.8 index alone, in its own step (index_url: nothing else is looked
# up there); everything else from PyPI. nanochat's dependencies are its pyproject.toml's at the
# pinned commit (92d63d4; tests/data/modal/nanochat-pyproject.toml), plus what its code imports
# without declaring (requests: nanochat/dataset.py, pyyaml: scripts/base_eval.py, jinja2:
# nanochat/core_eval.py), plus speedq's own (pydantic).
TORCH = "torch==2.9.1"
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
NANOCHAT_PACKAGES = [
    "filelock>=3.19.0",
    "kernels>=0.11.7",
    "numpy>=1.26.0",
    "psutil>=7.1.0",
    "pyarrow>=21.0.0",
    "rustbpe>=0.1.0",
    "tiktoken>=0.11.0",
    "wandb>=0.21.3",
]
NANOCHAT_UNDECLARED = ["requests", "pyyaml", "jinja2"]
SPEEDQ_PACKAGES = ["pydantic>=2.7,<3", "pydantic-settings>=2.7,<3"]  # speedq.schemas and speedq.settings

image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("git", "curl", "ca-certificates", "build-essential")
    .uv_pip_install(TORCH, index_url=TORCH_INDEX)
    .uv_pip_install(*NANOCHAT_PACKAGES, *NANOCHAT_UNDECLARED, *SPEEDQ_PACKAGES)
    .env(
        {
            "WANDB_RUN": "dummy",
            "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
            # local, not on the Volume: files a stage holds open there would block every commit
            "HF_HOME": f"{LOCAL_ROOT}/cache/huggingface",
            "TORCHINDUCTOR_CACHE_DIR": f"{LOCAL_ROOT}/cache/torchinductor",
            "TRITON_CACHE_DIR": f"{LOCAL_ROOT}/cache/triton",
        }
    )
    .add_local_python_source("speedq")
)

app = modal.App(settings.get().modal_app, image=image)
volume = modal.Volume.from_name(settings.get().modal_volume, create_if_missing=True)
# (typed as modal's `volumes=` takes it: its dict is invariant in the value type)
VOLUMES: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {VOLUME_MOUNT: volume}


# ---------------------------------------------------------------------------------------------
# The plain container-side code.


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


# ---------------------------------------------------------------------------------------------
# The Modal functions: thin shells over the plain code above.


def _commit_volume() -> None:
    volume.commit()  # raises: offload.Offloader counts failures, execute logs its own


def _reload_volume() -> None:
    volume.reload()


def _call_job_id() -> str:
    """The same for every start of one call (Modal restarts a preempted input with the same id)."""
    return f"cli-{modal.current_function_call_id() or 'local'}"


def _container_body(
    mode: Mode, model: str, repo_ref: str, force_restart: bool, team: str, run_name: str, request: str
) -> WireData:
    if request:
        req = parse_request(request)
    else:
        req = request_for(
            mode=mode,
            model=model,
            repo_ref=repo_ref,
            force_restart=force_restart,
            team=team,
            run_name=run_name,
            job_id=_call_job_id(),
            gpu=DEFAULT_GPU,
        )
    return execute(
        req, commit_volume=_commit_volume, reload_volume=_reload_volume, call_id=modal.current_function_call_id()
    )


@app.function(volumes=VOLUMES, cpu=8, memory=32768, timeout=PREPARE_TIMEOUT_S, single_use_containers=True)
def prepare_data(request: str) -> bool:
    """CPU only: run the data and tokenizer stages for the request's commit into /vol/data."""
    return prepare(parse_request(request), _commit_volume)


@app.function(timeout=120)
def resolve_ref(repo: str, ref: str) -> str:
    """CPU only: pin `ref` of `repo` to a full commit id (git ls-remote)."""
    from speedq.gpu import runner

    return runner.resolve_commit(repo, ref)


@app.function(gpu=DEFAULT_GPU, volumes=VOLUMES, timeout=RUN_TIMEOUT_S, single_use_containers=True)
def run_speedrun(
    model: str = config.DEFAULT_MODEL,
    repo_ref: str = config.DEFAULT_REPO_REF,
    force_restart: bool = False,
    team: str = CLI_TEAM,
    run_name: str = "",
    request: str = "",
) -> WireData:
    """The full speedrun. From a worker: `request` (RunRequest JSON); from `modal run`: the options."""
    return _container_body("full", model, repo_ref, force_restart, team, run_name, request)


@app.function(gpu=DEFAULT_GPU, volumes=VOLUMES, timeout=SMOKE_TIMEOUT_S, single_use_containers=True)
def test_10_steps(
    model: str = config.DEFAULT_MODEL,
    repo_ref: str = config.DEFAULT_REPO_REF,
    force_restart: bool = False,
    team: str = CLI_TEAM,
    run_name: str = "",
    request: str = "",
) -> WireData:
    """The 10-step smoke test (run `<model>-smoke`, its own directory)."""
    return _container_body("smoke", model, repo_ref, force_restart, team, run_name, request)
