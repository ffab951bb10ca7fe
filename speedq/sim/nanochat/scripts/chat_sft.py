"""Supervised fine-tuning of the base model into a chat model (simulated)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from nanochat import common
from nanochat.common import fail, get_base_dir, strip_separator

SFT_STEPS = 5


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="Chat SFT")
    p.add_argument("--run", type=str, default="dummy")
    p.add_argument("--device-batch-size", type=int, default=4)
    p.add_argument("--model-tag", type=str, default=None)
    p.add_argument("--model-step", type=int, default=None)
    p.add_argument("--num-iterations", type=int, default=-1)
    args = p.parse_args(strip_separator(argv))
    common.parse_faults()
    base = get_base_dir()
    root = base / "base_checkpoints"
    tags = [args.model_tag] if args.model_tag else sorted(d.name for d in root.glob("*") if d.is_dir())
    step = common.last_step(root / tags[-1]) if tags else None
    if step is None:
        fail(f"no base model checkpoint under {root}; run scripts.base_train first")
    meta = json.loads(common.meta_path(root / tags[-1], step).read_text())
    print(f"Loaded base model {tags[-1]} at step {step}", flush=True)
    total = args.num_iterations if args.num_iterations > 0 else SFT_STEPS
    for i in range(1, total + 1):
        time.sleep(common.step_seconds())
        print(f"Step {i:05d}/{total:05d} | Training loss: {2.0 - i * 0.05:.6f} | lrm: 1.000000", flush=True)
    out = base / "chatsft_checkpoints" / tags[-1]
    common.save_checkpoint(out, total, {"sft": True}, {"step": total, "model_config": meta["model_config"]}, 1)
    print(f"Saved model to {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
