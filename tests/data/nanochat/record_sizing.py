"""Record nanochat's own sizing arithmetic into sizing.json (run by hand; needs torch).

    python tests/data/nanochat/record_sizing.py /path/to/nanochat/checkout > tests/data/nanochat/sizing.json

It executes scripts/base_train.py's own code (build_model_meta, the scaling-params and auto batch
size block, the num_iterations block), cut from the file by its comments, on meta-device models
built by nanochat/gpt.py: nothing of speedq's is used, so the table can check speedq's arithmetic.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path


def cut(source: str, start: str, end: str) -> str:
    return source[source.index(start) : source.index(end)]


def main() -> None:
    repo = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(repo))
    import torch
    from nanochat.gpt import GPT, GPTConfig

    source = (repo / "scripts" / "base_train.py").read_text()
    build = cut(source, "def build_model_meta(depth):", "# Build the model, move to device")
    sizing = cut(source, "def get_scaling_params(m):", "# 3) Knowing the batch size")
    horizon = cut(source, "# num_iterations: either it is given", "print0(f\"Total number of training tokens")
    git = ["git", "-C", str(repo), "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    rows = []
    for depth in range(2, 33):
        for ratio in (8.0, 12.0):
            args = argparse.Namespace(
                depth=depth, aspect_ratio=64, head_dim=128, max_seq_len=2048, window_pattern="SSSL",
                target_param_data_ratio=ratio, total_batch_size=-1, num_iterations=-1, target_flops=-1.0,
            )
            scope = {"args": args, "vocab_size": 32768, "GPT": GPT, "GPTConfig": GPTConfig, "torch": torch,
                     "math": math, "print0": lambda *a, **k: None}
            exec(build, scope)
            scope["model"] = scope["build_model_meta"](depth)
            scope["num_flops_per_token"] = scope["model"].estimate_flops()
            exec(sizing, scope)
            exec(horizon, scope)
            rows.append({
                "depth": depth, "ratio": ratio, "scaling_params": scope["num_scaling_params"],
                "flops_per_token": scope["num_flops_per_token"], "total_batch_size": scope["total_batch_size"],
                "num_iterations": scope["num_iterations"],
            })
    json.dump({"nanochat_commit": commit, "vocab_size": 32768, "max_seq_len": 2048, "rows": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
