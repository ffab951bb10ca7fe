"""speedq's GPU-side Modal app: `modal deploy speedq/gpu/modal_app.py`.

Functions (workers spawn them by name; people run them with `modal run`):
- `run_speedrun`  the full speedrun, default H100:8, up to 24 h per attempt
- `test_10_steps` the 10-step smoke test
- `prepare_data`  CPU only: dataset shards and tokenizer into /vol/data, once per nanochat commit
- `resolve_ref`   CPU only: pin a nanochat ref to a commit (the backend's fallback without git)

The old single-user commands still work:
    modal run speedq/gpu/modal_app.py::test_10_steps --model d12 --repo-ref master
    modal run speedq/gpu/modal_app.py::run_speedrun --model d12 --repo-ref master [--force-restart]
`modal run FILE::fn` calls the function remotely with its typed parameters as `--options`; a worker
spawns the same function with `request=<RunRequest JSON>` (and its GPU via `with_options`).

Volume layout (config.MODAL_VOLUME_NAME at /vol): runs in /vol/runs/<team>/<run-name>/, shared
data in /vol/data/, caches (nanochat checkouts per commit, compile caches) in /vol/cache/.

Everything real happens in plain functions (`request_for`, `execute`, `prepare`) so tests run them
in-process with a temporary directory standing in for /vol. Modal restarts a preempted function on
the same input by itself; the body is safe to start again (the runner resumes from the newest
complete checkpoint, and a force restart wipes the run once per job id, which stays the same).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import modal

from speedq import config
from speedq.gpu import layout
from speedq.schemas import JobSpec, Mode, Outcome, RunRequest, RunResult

log = logging.getLogger("speedq.modal_app")

VOLUME_MOUNT = config.MODAL_VOLUME_MOUNT
DEFAULT_GPU = config.DEFAULT_GPU  # "H100:8"
RUN_TIMEOUT_S = config.MAX_ATTEMPT_TIMEOUT_S  # 24 h, Modal's ceiling
SMOKE_TIMEOUT_S = 2 * 3600  # compile and first data download included
PREPARE_TIMEOUT_S = 4 * 3600
CLI_TEAM = "default"
PREPARED_MARKER = ".speedq-prepared-{commit}"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")

# nanochat's runtime dependencies (its pyproject.toml; torch from the CUDA 12.8 index), plus
# speedq's own (pydantic). The nanochat checkout itself comes at run time, per commit.
NANOCHAT_PACKAGES = [
    "torch==2.9.1",
    "datasets>=4.0.0",
    "fastapi>=0.117.1",
    "filelock>=3.0.0",
    "kernels>=0.11.7",
    "matplotlib>=3.10.8",
    "psutil>=7.1.0",
    "python-dotenv>=1.2.1",
    "regex>=2025.9.1",
    "rustbpe>=0.1.0",
    "scipy>=1.15.3",
    "setuptools>=80.9.0",
    "tabulate>=0.9.0",
    "tiktoken>=0.11.0",
    "tokenizers>=0.22.0",
    "transformers>=4.57.3",
    "uvicorn>=0.36.0",
    "wandb>=0.21.3",
    "zstandard>=0.25.0",
]
SPEEDQ_PACKAGES = ["pydantic>=2.7,<3"]

image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("git", "curl", "ca-certificates", "build-essential")
    .uv_pip_install(
        *NANOCHAT_PACKAGES,
        *SPEEDQ_PACKAGES,
        extra_index_url="https://download.pytorch.org/whl/cu128",
    )
    .env(
        {
            "WANDB_RUN": "dummy",
            "WANDB_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
            "HF_HOME": f"{VOLUME_MOUNT}/cache/huggingface",
            "TORCHINDUCTOR_CACHE_DIR": f"{VOLUME_MOUNT}/cache/torchinductor",
            "TRITON_CACHE_DIR": f"{VOLUME_MOUNT}/cache/triton",
        }
    )
    .add_local_python_source("speedq")
)

app = modal.App(config.MODAL_APP_NAME, image=image)
volume = modal.Volume.from_name(config.MODAL_VOLUME_NAME, create_if_missing=True)
VOLUMES = {VOLUME_MOUNT: volume}


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
    spec = JobSpec(
        team=team,
        model=model,
        repo_ref=repo_ref,
        mode=mode,
        force_restart=force_restart,
        gpu=gpu,
        run_name=run_name or None,
        backend="modal",
    )
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


def parse_request(request: str | dict | RunRequest) -> RunRequest:
    if isinstance(request, RunRequest):
        return request
    if isinstance(request, dict):
        return RunRequest.model_validate(request)
    return RunRequest.model_validate_json(request)


def prepared_marker(req: RunRequest) -> Path:
    return Path(req.data_dir) / PREPARED_MARKER.format(commit=req.commit)


def data_ready(req: RunRequest) -> bool:
    return prepared_marker(req).exists()


def pin_commit(req: RunRequest) -> RunRequest:
    """A request naming a branch or tag gets the commit it points at now (the CLI path)."""
    if _COMMIT_RE.fullmatch(req.commit):
        return req
    from speedq.gpu import runner

    return req.model_copy(update={"commit": runner.resolve_commit(req.repo, req.commit)})


def prepare(req: RunRequest, commit_volume: Callable[[], None] = lambda: None) -> bool:
    """Dataset shards and tokenizer into req.data_dir, once per commit. True if it ran them."""
    if data_ready(req):
        return False
    from speedq.gpu import runner

    try:
        runner.prepare_data(req)
        marker = prepared_marker(req)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(req.commit + "\n")
    finally:
        commit_volume()
    return True


def execute(
    request: str | dict | RunRequest,
    *,
    commit_volume: Callable[[], None] = lambda: None,
    reload_volume: Callable[[], None] = lambda: None,
    prepare_remote: Callable[[RunRequest], None] | None = None,
) -> dict:
    """One attempt inside the container: data first, then the runner; returns a RunResult dict.

    `prepare_remote` runs `prepare` somewhere else (the CPU function); None runs it here.
    The Volume is committed after each checkpoint (the runner calls on_checkpoint) and at the end,
    whatever happens, so a preempted or crashed attempt leaves its checkpoints for the next one.
    """
    from speedq.gpu import runner

    req = pin_commit(parse_request(request))
    if not data_ready(req):
        if prepare_remote is not None:
            prepare_remote(req)
            reload_volume()  # see what the CPU container wrote
        else:
            prepare(req, commit_volume)
    try:
        result = runner.run(req, on_checkpoint=commit_volume)
    finally:
        commit_volume()
    if not isinstance(result, RunResult):  # be liberal about what the runner hands back
        result = RunResult.model_validate(result)
    if result.outcome is not Outcome.succeeded:
        log.warning("attempt %s of %s ended %s: %s", req.attempt, req.job_id, result.outcome.value, result.error)
    return result.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# The Modal functions: thin shells over the plain code above.


def _commit_volume() -> None:
    try:
        volume.commit()
    except Exception as exc:  # a failed commit must not kill hours of training; the next one retries
        log.warning("volume commit failed: %s", exc)


def _reload_volume() -> None:
    try:
        volume.reload()
    except Exception as exc:
        log.warning("volume reload failed: %s", exc)


def _prepare_on_cpu(req: RunRequest) -> None:
    prepare_data.remote(req.model_dump_json())


def _call_job_id() -> str:
    """The same for every start of one call (Modal restarts a preempted input with the same id)."""
    return f"cli-{modal.current_function_call_id() or 'local'}"


def _container_body(
    mode: Mode, model: str, repo_ref: str, force_restart: bool, team: str, run_name: str, request: str
) -> dict:
    if request:
        req = parse_request(request)
    else:
        gpu = DEFAULT_GPU
        req = request_for(
            mode=mode,
            model=model,
            repo_ref=repo_ref,
            force_restart=force_restart,
            team=team,
            run_name=run_name,
            job_id=_call_job_id(),
            gpu=gpu,
        )
    return execute(
        req, commit_volume=_commit_volume, reload_volume=_reload_volume, prepare_remote=_prepare_on_cpu
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
) -> dict:
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
) -> dict:
    """The 10-step smoke test (run `<model>-smoke`, its own directory)."""
    return _container_body("smoke", model, repo_ref, force_restart, team, run_name, request)
