"""Evaluate a chat model on the chat tasks (simulated). `-i sft` picks the SFT model."""

from __future__ import annotations

import argparse
import sys

from nanochat import common
from nanochat.common import fail, get_base_dir, strip_separator

SOURCES = {"sft": "chatsft_checkpoints", "rl": "chatrl_checkpoints", "base": "base_checkpoints"}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="Chat eval")
    p.add_argument("-i", "--source", type=str, required=True, choices=sorted(SOURCES))
    p.add_argument("-a", "--task-name", type=str, default=None)
    p.add_argument("-g", "--model-tag", type=str, default=None)
    args = p.parse_args(strip_separator(argv))
    common.parse_faults()
    root = get_base_dir() / SOURCES[args.source]
    if not any(root.glob("*/model_*.pt")):
        fail(f"no {args.source} model under {root}")
    common.stage_pause()
    for task, acc in (("ARC-Easy", 0.3876), ("ARC-Challenge", 0.2841), ("MMLU", 0.3112), ("GSM8K", 0.0455)):
        if args.task_name in (None, task):
            print(f"{task} accuracy: {100 * acc:.2f}%", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
