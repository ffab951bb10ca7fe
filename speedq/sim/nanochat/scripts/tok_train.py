"""Train the BPE tokenizer on the first shards (simulated)."""

from __future__ import annotations

import argparse
import pickle
import sys

from nanochat.common import VOCAB_SIZE, fail, get_base_dir, parse_faults, pt_bytes, stage_pause, strip_separator
from nanochat.dataset import DATA_DIR_NAME


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Train a BPE tokenizer")
    parser.add_argument("--max-chars", type=int, default=2_000_000_000)
    parser.add_argument("--doc-cap", type=int, default=10_000)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(strip_separator(argv))
    parse_faults()
    base = get_base_dir()
    shards = sorted((base / DATA_DIR_NAME).glob("shard_*.parquet"))
    if not shards:
        fail(f"no training shards in {base / DATA_DIR_NAME}; run python -m nanochat.dataset first")
    print(f"max_chars: {args.max_chars:,}", flush=True)
    print(f"vocab_size: {args.vocab_size:,}", flush=True)
    stage_pause()
    tok_dir = base / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "tokenizer.pkl").write_bytes(pickle.dumps({"vocab_size": args.vocab_size, "shards": len(shards)}))
    (tok_dir / "token_bytes.pt").write_bytes(pt_bytes({"token_bytes": list(range(256))}, "token_bytes"))
    print(f"Training time: 0.05s", flush=True)
    print(f"Saved tokenizer encoding to {tok_dir / 'tokenizer.pkl'}", flush=True)
    print(f"Saved token_bytes to {tok_dir / 'token_bytes.pt'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
