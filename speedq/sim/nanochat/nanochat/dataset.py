"""Download the pretraining shards (simulated: small placeholder files, no network).

python -m nanochat.dataset -n 8 [-w 4]   # shards 0..7 into $NANOCHAT_BASE_DIR/base_data_climbmix
"""

from __future__ import annotations

import argparse
import os
import sys

from nanochat.common import fail, get_base_dir, parse_faults, stage_pause

MAX_SHARD = 6542
DATA_DIR_NAME = "base_data_climbmix"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Download pretraining shards")
    parser.add_argument("-n", "--num-files", type=int, default=-1, help="shards to download (-1 = all)")
    parser.add_argument("-w", "--num-workers", type=int, default=4, help="parallel download workers")
    args = parser.parse_args(argv)
    parse_faults()
    count = MAX_SHARD if args.num_files == -1 else args.num_files
    if not 0 < count <= MAX_SHARD or args.num_workers < 1:
        fail(f"-n must be 1..{MAX_SHARD} (or -1) and -w at least 1")
    data_dir = get_base_dir() / DATA_DIR_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {count} shards using {args.num_workers} workers...", flush=True)
    print(f"Target directory: {data_dir}", flush=True)
    written = 0
    for index in range(count):
        path = data_dir / f"shard_{index:05d}.parquet"
        if path.exists():
            continue  # nanochat skips shards it already has
        tmp = path.with_suffix(".parquet.tmp")
        tmp.write_bytes(b"PAR1" + f"simulated shard {index}\n".encode() + b"PAR1")
        os.replace(tmp, path)
        written += 1
    stage_pause()
    print(f"Done! Downloaded: {written}/{count} shards to {data_dir}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
