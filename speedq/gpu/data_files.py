"""Whether nanochat's data is on disk and whole: the shards and the tokenizer a run needs, as the
runner checks them before and after its data stages (an exit code says less: a cut download
exits 0). Names and counts are nanochat's rules, in speedq.gpu.nanochat."""

from __future__ import annotations

from pathlib import Path

from speedq.gpu.nanochat import SHARDS_DIR, TOKENIZER_DIR, TOKENIZER_FILES, VAL_SHARD, shard_name


def parquet_readable(path: Path) -> bool:
    """A whole parquet file: `PAR1` at both ends and a footer length that fits (a cut download
    fails this); the footer is what a reader opens first."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                return False
            size = fh.seek(0, 2)
            if size < 12:
                return False
            fh.seek(size - 8)
            tail = fh.read(8)
    except OSError:
        return False
    footer = int.from_bytes(tail[:4], "little")
    return tail[4:] == b"PAR1" and 0 < footer <= size - 12


def missing_shards(data_dir: Path, count: int) -> list[int]:
    """Shards 0..count-1 and the val shard that are absent or unreadable in `<data_dir>/base_data_climbmix`."""
    shards = Path(data_dir) / SHARDS_DIR
    return [i for i in [*range(count), VAL_SHARD] if not parquet_readable(shards / shard_name(i))]


def tokenizer_vocab_size(data_dir: Path) -> int | None:
    """The vocabulary of the tokenizer in `data_dir`, which base_train sizes the model with (a
    tokenizer trained with --vocab-size changes the auto batch). None when it cannot be read here:
    the file is a pickled tiktoken Encoding, which needs tiktoken (nanochat unpickles it too)."""
    import pickle

    try:
        with open(Path(data_dir) / TOKENIZER_DIR / TOKENIZER_FILES[0], "rb") as fh:
            enc = pickle.load(fh)
    except Exception:  # noqa: BLE001 - absent, or tiktoken missing: the default vocabulary then
        return None
    size = enc.get("vocab_size") if isinstance(enc, dict) else getattr(enc, "n_vocab", None)
    return size if isinstance(size, int) and size > 0 else None


def tokenizer_ready(data_dir: Path) -> bool:
    return all((Path(data_dir) / TOKENIZER_DIR / name).is_file() for name in TOKENIZER_FILES)
