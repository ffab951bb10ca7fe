"""Pretrain the base model (simulated): nanochat's flags, sizing, batch assertion, output lines
and checkpoints, with its 0-based step loop (scripts/base_train.py at 92d63d4).

python -m scripts.base_train --depth=4 --save-every=5 [--resume-from-step=S]
The one process plays WORLD_SIZE ranks: it writes one optimizer shard per rank.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import time

from nanochat import common
from nanochat.common import fail, get_base_dir, strip_separator
from nanochat.dataset import DATA_DIR_NAME


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Pretrain base model")
    p.add_argument("--run", type=str, default="dummy", help="wandb run name ('dummy' disables wandb)")
    p.add_argument("--device-type", type=str, default="")
    p.add_argument("--fp8", action="store_true")
    p.add_argument("--fp8-recipe", type=str, default="tensorwise", choices=["rowwise", "tensorwise"])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--aspect-ratio", type=int, default=64)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--max-seq-len", type=int, default=common.SEQUENCE_LEN)
    p.add_argument("--window-pattern", type=str, default="SSSL")
    p.add_argument("--num-iterations", type=int, default=-1)
    p.add_argument("--target-flops", type=float, default=-1.0)
    p.add_argument("--target-param-data-ratio", type=float, default=12)
    p.add_argument("--device-batch-size", type=int, default=32)
    p.add_argument("--total-batch-size", type=int, default=-1)
    for name, default in (("embedding-lr", 0.3), ("unembedding-lr", 0.008), ("weight-decay", 0.28), ("matrix-lr", 0.02),
                          ("scalar-lr", 0.5), ("warmdown-ratio", 0.65), ("final-lr-frac", 0.05)):
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument("--warmup-steps", type=int, default=40)
    p.add_argument("--resume-from-step", type=int, default=-1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-tokens", type=int, default=80 * 524288)
    p.add_argument("--core-metric-every", type=int, default=2000)
    p.add_argument("--core-metric-max-per-task", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=-1)
    p.add_argument("--model-tag", type=str, default=None)
    return p.parse_args(strip_separator(argv))


def loss_at(step: int, total: int) -> float:
    """A smooth, deterministic curve from about 10.4 down towards 3 (with a little wobble)."""
    return 3.0 + 7.4 * math.exp(-6.0 * step / max(total, 1)) + 0.01 * math.sin(step)


def lr_multiplier(step: int, total: int, warmup: int = 40, warmdown_ratio: float = 0.65, final: float = 0.05) -> float:
    warmdown = round(warmdown_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    if step <= total - warmdown:
        return 1.0
    progress = (total - step) / warmdown
    return progress + (1 - progress) * final


def vocab_size(base) -> int:
    try:
        return int(pickle.loads((base / "tokenizer" / "tokenizer.pkl").read_bytes())["vocab_size"])
    except (OSError, KeyError, ValueError, pickle.UnpicklingError):
        return common.VOCAB_SIZE


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    faults = common.parse_faults()
    ranks = common.world_size()
    base = get_base_dir()
    if not any((base / DATA_DIR_NAME).glob("shard_*.parquet")):
        fail(f"no training shards in {base / DATA_DIR_NAME}; run python -m nanochat.dataset first")
    if not (base / "tokenizer" / "tokenizer.pkl").exists():
        fail("no tokenizer; run python -m scripts.tok_train first")

    tag = args.model_tag or f"d{args.depth}"
    ckpt_dir = base / "base_checkpoints" / tag
    vocab = vocab_size(base)
    shape = dict(aspect_ratio=args.aspect_ratio, head_dim=args.head_dim, max_seq_len=args.max_seq_len,
                 vocab_size=vocab, window_pattern=args.window_pattern)
    config = common.model_config(args.depth, **shape)
    print(f"Vocab size: {vocab:,}", flush=True)
    counts = common.parameter_counts(config)
    print("Parameter counts:", flush=True)
    for key, value in counts.items():
        print(f"{key:24s}: {value:,}", flush=True)
    flops_per_token = common.flops_per_token(config)
    print(f"Estimated FLOPs per token: {flops_per_token:e}", flush=True)
    target_tokens = int(args.target_param_data_ratio * common.scaling_params(config))
    total_batch_size = args.total_batch_size
    if total_batch_size == -1:
        d12 = common.model_config(12, **shape)
        total_batch_size = common.auto_batch_size(target_tokens, d12, args.target_param_data_ratio)
        print(f"Auto-computed optimal batch size: {total_batch_size:,} tokens", flush=True)
    if args.num_iterations > 0:
        total = args.num_iterations
        print(f"Using user-provided number of iterations: {total:,}", flush=True)
    elif args.target_param_data_ratio > 0:
        total = target_tokens // total_batch_size
        print(f"Calculated number of iterations from target data:param ratio: {total:,}", flush=True)
    else:
        fail("the sim needs --num-iterations or --target-param-data-ratio")
    print(f"Total number of training tokens: {total * total_batch_size:,}", flush=True)
    print(f"Total training FLOPs estimate: {flops_per_token * total * total_batch_size:e}", flush=True)

    step, elapsed, min_val_bpb, val_bpb = 0, 0.0, float("inf"), None
    resuming = args.resume_from_step != -1
    if resuming:
        print(f"Resuming optimization from step {args.resume_from_step}", flush=True)
        meta = common.load_checkpoint(ckpt_dir, args.resume_from_step, ranks)
        if meta.get("model_config") != config:
            fail(f"cannot resume from step {args.resume_from_step}: the checkpoint is for another model config")
        step = int(meta["step"])
        elapsed = float(meta["loop_state"]["total_training_time"])
        val_bpb = meta["val_bpb"]
        saved = meta["loop_state"]["min_val_bpb"]
        min_val_bpb = float("inf") if saved is None else float(saved)

    tokens_per_fwdbwd = args.device_batch_size * args.max_seq_len
    world_tokens_per_fwdbwd = tokens_per_fwdbwd * ranks
    if total_batch_size % world_tokens_per_fwdbwd != 0:
        print("Traceback (most recent call last):", file=sys.stderr, flush=True)
        print(f"AssertionError: total_batch_size ({total_batch_size}) must be a multiple of {world_tokens_per_fwdbwd}.",
              file=sys.stderr, flush=True)
        sys.exit(1)
    grad_accum_steps = total_batch_size // world_tokens_per_fwdbwd
    print(f"Tokens / micro-batch / rank: {args.device_batch_size} x {args.max_seq_len} = {tokens_per_fwdbwd:,}", flush=True)
    print(f"Tokens / micro-batch: {world_tokens_per_fwdbwd:,}", flush=True)
    print(f"Total batch size {total_batch_size:,} => gradient accumulation steps: {grad_accum_steps}", flush=True)

    step_s = common.step_seconds()

    def save(at: int, torn: bool = False) -> None:
        meta = {
            "step": at,
            "val_bpb": val_bpb,
            "model_config": config,
            "user_config": vars(args),
            "device_batch_size": args.device_batch_size,
            "max_seq_len": args.max_seq_len,
            "total_batch_size": total_batch_size,
            "dataloader_state_dict": {"pq_idx": at // 100, "rg_idx": at % 100, "epoch": 1},
            "loop_state": {
                "min_val_bpb": None if min_val_bpb == float("inf") else min_val_bpb,
                "smooth_train_loss": loss_at(at, total),
                "total_training_time": elapsed,
            },
        }
        model = {"step": at, "config": config, "weights": "simulated"}
        common.save_checkpoint(ckpt_dir, at, model, meta, ranks, torn=torn)
        if not torn:
            print(f"Saved model parameters and optimizer state to: {ckpt_dir} (step {at})", flush=True)

    while True:  # runs total+1 times: the last pass evaluates and saves
        last_step = step == total
        # A fault at step S strikes before anything of step S: a torn one during its save.
        fault = None if last_step else common.fault_due(faults, step)
        if fault == "crash":
            print("Traceback (most recent call last):", file=sys.stderr, flush=True)
            print(f"RuntimeError: simulated crash at step {step}", file=sys.stderr, flush=True)
            sys.exit(1)
        if fault == "hang":
            common.hang_forever()
        if fault == "preempt":
            common.die_like_a_lost_container()
        if fault == "torn":
            save(step, torn=True)
            common.die_like_a_lost_container()

        if args.eval_every > 0 and (last_step or step % args.eval_every == 0):
            val_bpb = 0.8 + loss_at(step, total) / 40
            print(f"Step {step:05d} | Validation bpb: {val_bpb:.6f}", flush=True)
            min_val_bpb = min(min_val_bpb, val_bpb)
        if args.core_metric_every > 0 and (last_step or (step > 0 and step % args.core_metric_every == 0)):
            print(f"Step {step:05d} | CORE metric: {0.25 * step / total:.4f}", flush=True)
        if args.sample_every > 0 and (last_step or (step > 0 and step % args.sample_every == 0)):
            print("<|bos|>The capital of France is Paris.", flush=True)
        if last_step or (step > 0 and step != args.resume_from_step and args.save_every > 0 and step % args.save_every == 0):
            save(step)
        if last_step:
            break

        t0 = time.time()
        time.sleep(step_s)
        dt = max(time.time() - t0, 1e-6)
        if step > 10:
            elapsed += dt  # nanochat counts only the time after the first 10 steps
        eta = f" | eta: {(total - step) * elapsed / (step - 10) / 60:.1f}m" if step - 10 > 0 else ""
        print(
            f"step {step:05d}/{total:05d} ({100 * step / total:.2f}%) | loss: {loss_at(step, total):.6f} | "
            f"lrm: {lr_multiplier(step, total, args.warmup_steps, args.warmdown_ratio, args.final_lr_frac):.2f} | "
            f"dt: {dt * 1000:.2f}ms | tok/sec: {int(total_batch_size / dt):,} | bf16_mfu: 48.12 | "
            f"epoch: 1 pq: {step // 100} rg: {step % 100} | total time: {elapsed / 60:.2f}m{eta}",
            flush=True,
        )
        step += 1

    print("Peak memory usage: 1234.56MiB", flush=True)
    print(f"Total training time: {elapsed / 60:.2f}m", flush=True)
    if val_bpb is not None:
        print(f"Minimum validation bpb: {min_val_bpb:.6f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
