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

Everything real happens in plain functions (`request_for`, `execute`, `prepare`, in
speedq/gpu/modal_body.py) so tests run them
in-process with a temporary directory standing in for /vol. Modal restarts a preempted function on
the same input by itself; the body is safe to start again (the runner resumes from the newest
complete checkpoint, and a force restart wipes the run once per job id, which stays the same).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import modal

from speedq import config, settings
from speedq.backends.modal import PREPARE_TIMEOUT_S, SMOKE_TIMEOUT_S
from speedq.backends.modal_data import shards_for
from speedq.gpu.modal_body import (
    DEFAULT_GPU,
    LOCAL_ROOT,
    VOLUME_MOUNT,
    WireData,
    announce,
    claim,
    data_ready,
    execute,
    gpu_parts,
    local_request,
    parse_request,
    pin_commit,
    prepare,
    prepared_marker,
    request_for,
    stop_stages,
)
from speedq.schemas import Mode

# Re-exported: the plain code's names, where `modal run` users and the tests have found them.
__all__ = [
    "CLI_TEAM", "DEFAULT_GPU", "LOCAL_ROOT", "PREPARE_TIMEOUT_S", "RUN_TIMEOUT_S", "SMOKE_TIMEOUT_S",
    "VOLUME_MOUNT", "WireData", "announce", "app", "claim", "data_ready", "execute", "gpu_parts", "image",
    "local_request", "parse_request", "pin_commit", "prepare", "prepare_data", "prepared_marker",
    "request_for", "resolve_ref", "run_speedrun", "shards_for", "stop_stages", "test_10_steps", "volume",
]

RUN_TIMEOUT_S = config.MAX_ATTEMPT_TIMEOUT_S  # 24 h, Modal's ceiling
CLI_TEAM = "default"

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
SPEEDQ_PACKAGES = ["pydantic>=2.12,<3"]  # speedq.schemas and speedq.settings, as pyproject.toml pins it

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
# The Modal functions: thin shells over the plain code (speedq/gpu/modal_body.py).


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
