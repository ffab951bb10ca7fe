"""The plan: nanochat's pipeline for one request (its stages, flags, commands and environment)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from speedq.gpu import data_files, layout, nanochat
from speedq.gpu.proctree import ATTEMPT_ENV, MARK_ENV
from speedq.schemas import RunRequest, depth_of

FALLBACK_SAVE_EVERY = 250  # when the step count is not known in advance (a target-flops run)
RANK_MODULE = "speedq.gpu.rank"  # every training process runs inside the run-dir fence
SIM_TORCHRUN = "speedq.sim.torchrun"  # the sim's torchrun: one process, in a session of its own


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # `python -m <module>` from the checkout's root
    flags: tuple[str, ...] = ()
    distributed: bool = False  # launched through torchrun on every GPU
    shared: bool = False  # writes into req.data_dir, reused by every run


def sizing(req: RunRequest, vocab_size: int | None = None) -> nanochat.Sizing:
    """Batch, device batch and step count, by nanochat's rules (the spec passed them at submit with
    nanochat's default vocabulary; here the data dir's tokenizer says the real one once it exists)."""
    vocab = vocab_size or data_files.tokenizer_vocab_size(Path(req.data_dir)) or nanochat.VOCAB_SIZE
    return nanochat.size_run(depth_of(req.model), req.mode, req.gpu_type, req.nproc, req.train_args, vocab)


def shards_needed(req: RunRequest) -> int:
    """Training shards this run needs (`nanochat.dataset -n`); the val shard comes on top. Sized with
    the default vocabulary, so the count does not move once a tokenizer is trained."""
    return nanochat.shards_needed(sizing(req, nanochat.VOCAB_SIZE), req.mode)


def train_flags(req: RunRequest) -> list[str]:
    """base_train's argv: speedq's settings, then the job's train args (which win where both set)."""
    size = sizing(req)
    flags: dict[str, int | float | bool | str] = {
        "depth": depth_of(req.model),
        "device-batch-size": size.device_batch_size,
        "model-tag": layout.model_tag(req.model, req.mode),
        "run": req.env.get("WANDB_RUN", "dummy"),
        "target-param-data-ratio": nanochat.PARAM_DATA_RATIO,
        "fp8": req.gpu_type in nanochat.FP8_GPUS,
    }
    if req.mode == "smoke":
        flags.update(nanochat.short_run_args(nanochat.SMOKE_STEPS))
    flags.update(req.train_args)  # a preflight's own steps, evals off and device batch are in here
    return nanochat.argv_of(flags)


def plan(req: RunRequest) -> list[Stage]:
    """nanochat's pipeline (runs/speedrun.sh) for this request, in order."""
    eval_batch = nanochat.DEVICE_BATCH_SIZE.get(req.gpu_type, 8)
    stages = [
        Stage("data", "nanochat.dataset", ("-n", str(shards_needed(req)), "-w", "8"), shared=True),
        Stage("tok_train", "scripts.tok_train", shared=True),
        Stage("tok_eval", "scripts.tok_eval", shared=True),
        Stage("base_train", "scripts.base_train", tuple(train_flags(req)), distributed=True),
    ]
    if req.mode == "smoke" or req.preflight_steps:
        return stages
    return [
        *stages,
        Stage("base_eval", "scripts.base_eval", (f"--device-batch-size={eval_batch}",), distributed=True),
        Stage("chat_sft", "scripts.chat_sft", (f"--run={req.env.get('WANDB_RUN', 'dummy')}",), distributed=True),
        Stage("chat_eval", "scripts.chat_eval", ("-i", "sft"), distributed=True),
    ]


def preflight_request(req: RunRequest, steps: int) -> RunRequest:
    """The preflight of `req`, a full run on several GPUs: the same commit and options for `steps`
    steps on one GPU of the same type, evals off, in the run dir's own `preflight/` (wiped once per
    job, so it never resumes another job's preflight nor touches the full run's checkpoints).

    The device batch is the full run's: the same memory per GPU, so an out-of-memory batch fails
    here too, and nanochat's batch rule (total a multiple of device batch x seq x GPUs) holds on
    one GPU since it holds on N. When the full run's sizing itself fails, the preflight passes the
    job's options as they are and the runner reports nanochat's refusal as its error.
    """
    args = {**req.train_args, **nanochat.short_run_args(steps)}
    try:
        args["device-batch-size"] = sizing(req).device_batch_size
    except nanochat.SizingError:
        pass
    return req.model_copy(update={
        "nproc": 1, "run_dir": str(PurePosixPath(req.run_dir) / layout.PREFLIGHT_DIR), "force_restart": True,
        "save_every": None, "preflight_steps": steps, "train_args": args,
    })


def save_every_for(req: RunRequest) -> int:
    if req.save_every:
        return req.save_every
    short = nanochat.SMOKE_STEPS if req.mode == "smoke" else req.preflight_steps
    if short:
        return max(1, short // 2)  # one mid-run save: a smoke test or preflight exercises the save path
    steps = sizing(req).num_iterations
    return nanochat.default_save_every(steps) if steps else FALLBACK_SAVE_EVERY


def command(req: RunRequest, stage: Stage, extra: list[str]) -> list[str]:
    flags = [*stage.flags, *extra]
    if not stage.distributed:
        return [sys.executable, "-m", stage.module, *flags]
    fenced = ["-m", RANK_MODULE, stage.module]
    if req.launcher == "python":
        return [sys.executable, *fenced, *flags]
    if req.launcher == "sim":
        return [sys.executable, "-m", SIM_TORCHRUN, *fenced, *flags]
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={req.nproc}", *fenced, "--", *flags]


def stage_env(req: RunRequest, base_dir: Path) -> dict[str, str]:
    env = {**os.environ, "WANDB_RUN": "dummy", **req.env}
    env.pop("WORLD_SIZE", None)  # torchrun sets it; a stray inherited one would confuse nanochat
    env.update(NANOCHAT_BASE_DIR=str(base_dir), PYTHONUNBUFFERED="1")
    env.update({MARK_ENV: req.run_dir, ATTEMPT_ENV: str(req.attempt)})  # found by it, fenced by it
    if req.launcher == "sim":
        env["WORLD_SIZE"] = str(req.nproc)  # the sim plays every rank in one process
    if req.launcher == "torchrun":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
