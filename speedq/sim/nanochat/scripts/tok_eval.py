"""Evaluate the tokenizer's compression ratio (simulated)."""

from __future__ import annotations

import sys

from nanochat.common import fail, get_base_dir, parse_faults, read_pt, stage_pause


def main(argv: list[str]) -> None:
    parse_faults()
    tok_dir = get_base_dir() / "tokenizer"
    for name in ("tokenizer.pkl", "token_bytes.pt"):
        if not (tok_dir / name).exists():
            fail(f"{tok_dir / name} is missing; run python -m scripts.tok_train first")
    read_pt(tok_dir / "token_bytes.pt")
    stage_pause()
    print("Comparison with GPT-2:", flush=True)
    for text, ratio in (("news", 4.81), ("korean", 3.12), ("code", 3.95), ("math", 2.87), ("science", 4.55)):
        print(f"{text:<10} ratio: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
