"""Shared bits of the simulated nanochat: base dir, ranks, timing, faults, checkpoint files.

Standard library only. The real nanochat's checkpoints are torch.save files, which are zip
archives; the sim writes zip archives of the same shape so a reader can check them with zipfile.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import signal
import sys
import time
import zipfile
from pathlib import Path

FAULT_KINDS = ("preempt", "crash", "hang", "torn")
FAULTS_FIRED = ".sim-faults-fired"
DEFAULT_STEP_S = 0.005
VOCAB_SIZE = 32768
SEQUENCE_LEN = 2048


def get_base_dir() -> Path:
    explicit = os.environ.get("NANOCHAT_BASE_DIR")
    base = Path(explicit) if explicit else Path.home() / ".cache" / "nanochat"
    base.mkdir(parents=True, exist_ok=True)
    return base


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def step_seconds() -> float:
    return float(os.environ.get("SPEEDQ_SIM_STEP_S", DEFAULT_STEP_S))


def stage_pause() -> None:
    """Stages other than training take a moment, a fraction of a second."""
    time.sleep(min(0.2, step_seconds() * 4))


def fail(message: str, code: int = 1) -> None:
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def strip_separator(argv: list[str]) -> list[str]:
    """torchrun passes `-- flags`; argparse would read everything after `--` as positional."""
    return [a for a in argv if a != "--"]


# ---------------------------------------------------------------------------------------------
# Faults: SPEEDQ_SIM_FAULTS="preempt@23,torn@25"


def parse_faults(text: str | None = None) -> dict[int, str]:
    """Step -> fault kind. Exits with a clear message on text it does not understand."""
    text = os.environ.get("SPEEDQ_SIM_FAULTS", "") if text is None else text
    faults: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, sep, step = item.partition("@")
        if not sep or kind not in FAULT_KINDS or not step.isdigit() or int(step) < 1:
            fail(
                f"bad SPEEDQ_SIM_FAULTS entry {item!r}: expected KIND@STEP with KIND one of "
                f"{', '.join(FAULT_KINDS)} and STEP a whole number >= 1, e.g. preempt@23,crash@40",
                code=2,
            )
        faults[int(step)] = kind
    return faults


def fault_due(faults: dict[int, str], step: int) -> str | None:
    """The fault for this step unless it already fired in this base dir (then a resume passes)."""
    kind = faults.get(step)
    if kind is None:
        return None
    fired_file = get_base_dir() / FAULTS_FIRED
    entry = f"{kind}@{step}"
    fired = fired_file.read_text().split() if fired_file.exists() else []
    if entry in fired:
        return None
    # Recorded (and synced) before firing: a preempt leaves no chance to record it after.
    with open(fired_file, "a") as fh:
        fh.write(entry + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return kind


def die_like_a_lost_container() -> None:
    """SIGKILL the whole container: our session, and our launcher's (the runner and the
    torchrun stand-in, which started us in a session of our own, as torchrun does).

    First a short pause: real steps take about a second, so the lines before a real preemption
    have reached the runner's log; the sim's millisecond steps would otherwise race the kill.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.3)
    try:
        launcher = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        if b"speedq.sim.torchrun" in launcher:  # never the group of whatever else started us
            os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
    except (OSError, ProcessLookupError, PermissionError):
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)  # not reached unless killpg was refused


def hang_forever() -> None:
    sys.stdout.flush()
    while True:
        time.sleep(3600)


# ---------------------------------------------------------------------------------------------
# torch.save-shaped files


def pt_bytes(payload: object, stem: str, filler: int = 4096) -> bytes:
    """A zip archive laid out like torch.save's (archive/data.pkl, data/0, version)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{stem}/data.pkl", pickle.dumps(payload))
        zf.writestr(f"{stem}/byteorder", "little")
        zf.writestr(f"{stem}/data/0", bytes(i % 251 for i in range(filler)))
        zf.writestr(f"{stem}/version", "3\n")
    return buf.getvalue()


def write_pt(path: Path, payload: object, filler: int = 4096) -> None:
    # Written in place, not atomically, as torch.save does: a kill mid-write leaves a short file.
    path.write_bytes(pt_bytes(payload, path.stem, filler))


def read_pt(path: Path) -> object:
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"{path.name}: corrupt member {bad}")
        return pickle.loads(zf.read(f"{path.stem}/data.pkl"))


# ---------------------------------------------------------------------------------------------
# Checkpoints, as nanochat/checkpoint_manager.py lays them out


def model_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"model_{step:06d}.pt"


def meta_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"meta_{step:06d}.json"


def optim_path(ckpt_dir: Path, step: int, rank: int) -> Path:
    return ckpt_dir / f"optim_{step:06d}_rank{rank}.pt"


def save_checkpoint(ckpt_dir: Path, step: int, model: dict, meta: dict, ranks: int, torn: bool = False) -> None:
    """Model (rank 0), meta (rank 0), then each rank's optimizer shard.

    torn: the model file is cut short mid-zip and the last rank's shard is never written, as when
    the container dies during the save.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    data = pt_bytes(model, model_path(ckpt_dir, step).stem, filler=16384)
    model_path(ckpt_dir, step).write_bytes(data[: len(data) // 2] if torn else data)
    meta_path(ckpt_dir, step).write_text(json.dumps(meta, indent=2))
    for rank in range(ranks):
        if torn and rank == ranks - 1:
            break
        write_pt(optim_path(ckpt_dir, step, rank), {"rank": rank, "step": step, "state": {}}, filler=8192)


def load_checkpoint(ckpt_dir: Path, step: int, ranks: int) -> dict:
    """The meta of a complete checkpoint; exits non-zero naming what is missing or unreadable."""
    needed = [model_path(ckpt_dir, step), meta_path(ckpt_dir, step)]
    needed += [optim_path(ckpt_dir, step, r) for r in range(ranks)]
    for path in needed:
        if not path.exists():
            fail(f"cannot resume from step {step}: checkpoint is incomplete, {path} is missing")
        try:
            if path.suffix == ".json":
                meta = json.loads(path.read_text())
            else:
                read_pt(path)
        except (OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as exc:
            fail(f"cannot resume from step {step}: checkpoint is incomplete, {path} is unreadable ({exc})")
    return meta


def last_step(ckpt_dir: Path) -> int | None:
    steps = [int(p.stem.split("_")[1]) for p in ckpt_dir.glob("model_*.pt")]
    return max(steps) if steps else None


# ---------------------------------------------------------------------------------------------
# The model nanochat builds (nanochat/gpt.py), counted module by module as GPT's parameters are


def model_config(depth: int, aspect_ratio: int = 64, head_dim: int = 128, max_seq_len: int = SEQUENCE_LEN,
                 vocab_size: int = VOCAB_SIZE, window_pattern: str = "SSSL") -> dict:
    """base_train's build_model_meta: model dim nudged up to a multiple of the head dim."""
    base_dim = depth * aspect_ratio
    model_dim = ((base_dim + head_dim - 1) // head_dim) * head_dim
    heads = model_dim // head_dim
    return {"sequence_len": max_seq_len, "vocab_size": vocab_size, "n_layer": depth, "n_head": heads,
            "n_kv_head": heads, "n_embd": model_dim, "window_pattern": window_pattern}


def parameter_counts(cfg: dict) -> dict[str, int]:
    """GPT.num_scaling_params for this config: the shapes of each module, summed."""
    n, d, heads, kv = cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"]
    vocab = -(-cfg["vocab_size"] // 64) * 64  # padded for efficiency
    head_dim = d // heads
    has_ve = [i % 2 == (n - 1) % 2 for i in range(n)]
    block = {
        "c_q": d * heads * head_dim, "c_k": d * kv * head_dim, "c_v": d * kv * head_dim, "c_proj": d * d,
        "c_fc": d * 4 * d, "mlp_proj": 4 * d * d,
    }
    matrices = sum(sum(block.values()) + (12 * kv if ve else 0) for ve in has_ve)
    counts = {
        "wte": vocab * d,
        "value_embeds": sum(vocab * kv * head_dim for ve in has_ve if ve),
        "lm_head": d * vocab,
        "transformer_matrices": matrices,
        "scalars": 2 * n + 24 + 1 + 1,
    }
    counts["total"] = sum(counts.values())
    return counts


def flops_per_token(cfg: dict) -> int:
    """GPT.estimate_flops: 6 per matmul weight (the smear gate is a Linear(24, 1)), plus attention's
    12 * heads * head dim * window per layer (S: a quarter of the context, in tiles of 128; the last
    layer is always L)."""
    counts = parameter_counts(cfg)
    n, t, heads = cfg["n_layer"], cfg["sequence_len"], cfg["n_head"]
    pattern, short = cfg["window_pattern"].upper(), -(-t // 4 // 128) * 128
    windows = [t if pattern[i % len(pattern)] == "L" or i == n - 1 else min(short, t) for i in range(n)]
    attention = sum(12 * heads * (cfg["n_embd"] // heads) * w for w in windows)
    return 6 * (counts["transformer_matrices"] + counts["lm_head"] + 24) + attention


def scaling_params(cfg: dict) -> int:
    counts = parameter_counts(cfg)
    return counts["transformer_matrices"] + counts["lm_head"]


def auto_batch_size(target_tokens: int, d12_cfg: dict, ratio: float) -> int:
    """base_train: the Power Lines batch (B ~ D^0.383 from 2^19 at d12), rounded to a power of two."""
    d_ref = ratio * scaling_params(d12_cfg)
    predicted = 2**19 * (target_tokens / d_ref) ** 0.383
    return 2 ** round(math.log2(predicted))
