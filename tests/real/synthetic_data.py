"""Synthetic pretraining data in nanochat's layout: parquet shards with a `text` column and a
tokenizer trained on them by nanochat's own `scripts.tok_train`.

nanochat reads every `*.parquet` in `<base>/base_data_climbmix/`, sorted by name, and takes the
last one as the validation split; the real validation shard is `shard_06542`, so it is written
under that name too.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

SHARDS_DIR = "base_data_climbmix"
TOKENIZER_DIR = "tokenizer"
VALIDATION_SHARD = 6542  # nanochat.dataset.MAX_SHARD: the pinned validation shard
CHARS_PER_SHARD = 300_000  # eight train shards hold more than tok_train's 2M characters
DOCS_PER_ROW_GROUP = 100
TOK_TRAIN_ARGS = ("--max-chars=2000000", "--vocab-size=4096")


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def _documents(rng: random.Random, chars: int) -> list[str]:
    """English-like documents: words over a fixed syllable set, so BPE finds merges to learn."""
    syllables = ["ka", "lo", "mi", "ne", "ra", "to", "su", "ve", "an", "el", "or", "is", "un", "th", "ch", "st"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(2000)]
    docs, total = [], 0
    while total < chars:
        sentences = []
        for _ in range(rng.randint(2, 8)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 16)))
            sentences.append(sentence.capitalize() + rng.choice([".", ".", "!", "?"]))
        doc = " ".join(sentences)
        docs.append(doc)
        total += len(doc)
    return docs


def write_shards(data_dir: Path, train_shards: int, seed: int = 0) -> list[Path]:
    """`train_shards` training shards and the validation shard, under `data_dir`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = data_dir / SHARDS_DIR
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for index in [*range(train_shards), VALIDATION_SHARD]:
        path = out / shard_name(index)
        tmp = path.with_name(path.name + ".tmp")  # nanochat skips *.tmp: a half-written shard is never read
        pq.write_table(pa.table({"text": _documents(rng, CHARS_PER_SHARD)}), tmp, row_group_size=DOCS_PER_ROW_GROUP)
        tmp.replace(path)
        written.append(path)
    return written


def train_tokenizer(nanochat_tree: Path, data_dir: Path, env: dict[str, str], log: Path) -> None:
    """nanochat's own tokenizer training, into `<data_dir>/tokenizer/`."""
    with open(log, "a") as out:
        done = subprocess.run(
            [sys.executable, "-m", "scripts.tok_train", *TOK_TRAIN_ARGS],
            cwd=nanochat_tree, env={**env, "NANOCHAT_BASE_DIR": str(data_dir)},
            stdout=out, stderr=subprocess.STDOUT, timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"scripts.tok_train exited {done.returncode}; see {log}")
    for name in ("tokenizer.pkl", "token_bytes.pt"):
        if not (data_dir / TOKENIZER_DIR / name).is_file():
            raise RuntimeError(f"scripts.tok_train wrote no {TOKENIZER_DIR}/{name}; see {log}")
