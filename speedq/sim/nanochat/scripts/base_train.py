"""Pretrain the base model (simulated): nanochat's flags, step count, output lines and checkpoints.

python -m scripts.base_train --depth=4 --save-every=5 [--resume-from-step=S]
The one process plays WORLD_SIZE ranks: it writes one optimizer shard per rank.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from nanochat import common
from nanochat.common import fail, get_base_dir, strip_separator
from nanochat.dataset import DATA_DIR_NAME


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Pretrain base model")
    p.add_argument("--run", type=str, default="dummy", help="wandb run name ('dummy' disables wandb)")
    p.add_argument("--device-type", type=str, default="")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--max-seq-len", type=int, default=common.SEQUENCE_LEN)
    p.add_argument("--num-iterations", type=int, default=-1, help="explicit steps (-1 = from the ratio)")
    p.add_argument("--target-flops", type=float, default=-1.0)
    p.add_argument("--target-param-data-ratio", type=float, default=10.5)
    p.add_argument("--device-batch-size", type=int, default=32)
    p.add_argument("--total-batch-size", type=int, default=common.DEFAULT_TOTAL_BATCH_SIZE)
    p.add_argument("--fp8", action="store_true")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-tokens", type=int, default=20 * 524288)
    p.add_argument("--core-metric-every", type=int, default=2000)
    p.add_argument("--core-metric-max-per-task", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=-1, help="-1 = only at the end")
    p.add_argument("--resume-from-step", type=int, default=-1, help="-1 = fresh")
    p.add_argument("--model-tag", type=str, default=None)
    args = p.parse_args(strip_separator(argv))
    if args.depth < 1 or args.device_batch_size < 1 or args.total_batch_size < 1:
        fail("--depth, --device-batch-size and --total-batch-size must be positive")
    return args


def loss_at(step: int, total: int) -> float:
    """A smooth, deterministic curve from about 10.4 down towards 3 (with a little wobble)."""
    return 3.0 + 7.4 * math.exp(-6.0 * step / max(total, 1)) + 0.01 * math.sin(step)


def lr_multiplier(step: int, total: int) -> float:
    warmdown_start = int(total * 0.6)  # nanochat warms the learning rate down over the last 40%
    if step <= warmdown_start:
        return 1.0
    return max(0.0, (total - step) / max(total - warmdown_start, 1))


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
    config = common.model_config(args.depth)
    params = common.scaling_params(args.depth)
    print(f"World size: {ranks}", flush=True)
    print(f"Vocab size: {common.VOCAB_SIZE:,}", flush=True)
    print(f"num_layers: {args.depth}", flush=True)
    print(f"model_dim: {config['n_embd']}", flush=True)
    print(f"Number of parameters: {params:,}", flush=True)
    if args.num_iterations > 0:
        total = args.num_iterations
        print(f"Using user-provided number of iterations: {total:,}", flush=True)
    else:
        total = common.iterations_for(args.depth, args.target_param_data_ratio, args.total_batch_size)
        print(f"Calculated number of iterations from target data:param ratio: {total:,}", flush=True)
    print(f"Total number of training tokens: {total * args.total_batch_size:,}", flush=True)
    print(f"fp8: {args.fp8}", flush=True)

    start, elapsed, min_val_bpb = 0, 0.0, float("inf")
    if args.resume_from_step >= 0:
        meta = common.load_checkpoint(ckpt_dir, args.resume_from_step, ranks)
        if meta.get("model_config") != config:
            fail(f"cannot resume from step {args.resume_from_step}: the checkpoint is for another model config")
        start = int(meta["step"])
        elapsed = float(meta["loop_state"]["total_training_time"])
        saved_bpb = meta["loop_state"]["min_val_bpb"]  # None when no evaluation ran yet
        min_val_bpb = float("inf") if saved_bpb is None else float(saved_bpb)
        print(f"Resuming optimization from step {start}", flush=True)

    step_s = common.step_seconds()
    tokens_per_step = args.total_batch_size

    def save(step: int, torn: bool = False) -> None:
        meta = {
            "step": step,
            "val_bpb": None if min_val_bpb == float("inf") else min_val_bpb,
            "model_config": config,
            "user_config": vars(args),
            "device_batch_size": args.device_batch_size,
            "max_seq_len": args.max_seq_len,
            "dataloader_state_dict": {"pq_idx": step // 100, "rg_idx": step % 100, "epoch": 1},
            "loop_state": {
                "min_val_bpb": None if min_val_bpb == float("inf") else min_val_bpb,
                "smooth_train_loss": loss_at(step, total),
                "total_training_time": elapsed,
            },
        }
        model = {"step": step, "config": config, "weights": "simulated"}
        common.save_checkpoint(ckpt_dir, step, model, meta, ranks, torn=torn)
        if not torn:
            print(f"Saved model parameters and optimizer state to: {ckpt_dir} (step {step})", flush=True)

    for step in range(start + 1, total + 1):
        fault = common.fault_due(faults, step)
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

        t0 = time.time()
        time.sleep(step_s)
        dt = max(time.time() - t0, 1e-6)
        elapsed += dt
        pct = 100.0 * step / total
        eta_m = (total - step) * dt / 60
        print(
            f"step {step:05d}/{total:05d} ({pct:.2f}%) | loss: {loss_at(step, total):.6f} | "
            f"lrm: {lr_multiplier(step, total):.2f} | dt: {dt * 1000:.2f}ms | "
            f"tok/sec: {int(tokens_per_step / dt):,} | bf16_mfu: 48.12 | epoch: 1 | "
            f"total time: {elapsed / 60:.2f}m | eta: {eta_m:.1f}m",
            flush=True,
        )
        last = step == total
        if args.eval_every > 0 and (step % args.eval_every == 0 or last):
            bpb = 0.8 + loss_at(step, total) / 40
            min_val_bpb = min(min_val_bpb, bpb)
            print(f"Step {step:05d} | Validation bpb: {bpb:.6f}", flush=True)
        if args.core_metric_every > 0 and (step % args.core_metric_every == 0 or last):
            print(f"Step {step:05d} | CORE metric: {0.25 * step / total:.4f}", flush=True)
        if args.sample_every > 0 and step % args.sample_every == 0:
            print("<|bos|>The capital of France is Paris.", flush=True)
        if last or (args.save_every > 0 and step % args.save_every == 0):
            save(step)

    if start >= total:
        print(f"Nothing to do: already at step {start} of {total}", flush=True)
    print(f"Peak memory usage: 1234.56MiB", flush=True)
    print(f"Total training time: {elapsed / 60:.2f}m", flush=True)
    print(f"Minimum validation bpb: {min_val_bpb:.6f}" if min_val_bpb != float("inf") else "Minimum validation bpb: n/a", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
