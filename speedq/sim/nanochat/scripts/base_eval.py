"""Evaluate the base model: CORE metric and bits per byte (simulated)."""

from __future__ import annotations

import argparse
import sys

from nanochat import common
from nanochat.common import fail, get_base_dir, strip_separator


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="Evaluate the base model")
    p.add_argument("--device-batch-size", type=int, default=32)
    p.add_argument("--model-tag", type=str, default=None)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--max-per-task", type=int, default=-1)
    args = p.parse_args(strip_separator(argv))
    common.parse_faults()
    root = get_base_dir() / "base_checkpoints"
    tags = [args.model_tag] if args.model_tag else sorted(d.name for d in root.glob("*") if d.is_dir())
    if not tags or common.last_step(root / tags[-1]) is None:
        fail(f"no base model checkpoint under {root}; run scripts.base_train first")
    step = args.step or common.last_step(root / tags[-1])
    print(f"Loading model {tags[-1]} at step {step}", flush=True)
    common.stage_pause()
    for task, acc in (("hellaswag", 0.31), ("arc_easy", 0.52), ("piqa", 0.64), ("winograd", 0.58)):
        print(f"Evaluating: {task}... accuracy: {acc:.4f}", flush=True)
    print("train bpb: 0.8712", flush=True)
    print("val bpb: 0.8745", flush=True)
    print("CORE metric: 0.2234", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
