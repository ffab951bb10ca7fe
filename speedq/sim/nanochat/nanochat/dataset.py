"""Download the pretraining shards (simulated: small parquet-shaped files, no network).

python -m nanochat.dataset -n 8 [-w 4]   # train shards 0..7, and the val shard, into
                                          # $NANOCHAT_BASE_DIR/base_data_climbmix

Like the real one it always adds the val shard (shard_06542) and exits 0 even when downloads
failed: SPEEDQ_SIM_NO_NETWORK=1 makes every download fail, as on a machine without internet.
"""

from __future__ import annotations

import argparse
import os
import sys

from nanochat.common import get_base_dir, parse_faults, stage_pause

MAX_SHARD = 6542  # the last datashard is the val split
DATA_DIR_NAME = "base_data_climbmix"


def parquet_bytes(index: int) -> bytes:
    """`PAR1`, a body, a footer, the footer's length and `PAR1`: the frame a parquet reader opens."""
    footer = f"simulated footer of shard {index}".encode()
    body = f"simulated shard {index}\n".encode()
    return b"PAR1" + body + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def download(path, index: int, offline: bool) -> bool:
    if path.exists():
        print(f"Skipping {path} (already exists)", flush=True)
        return True
    print(f"Downloading {path.name}...", flush=True)
    if offline:
        print(f"Attempt 1/5 failed for {path.name}: simulated: no network", flush=True)
        print(f"Failed to download {path.name} after 5 attempts", flush=True)
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(parquet_bytes(index))
    os.replace(tmp, path)
    print(f"Successfully downloaded {path.name}", flush=True)
    return True


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="Download pretraining dataset shards")
    parser.add_argument("-n", "--num-files", type=int, default=-1, help="train shards to download (-1 = all)")
    parser.add_argument("-w", "--num-workers", type=int, default=4, help="parallel download workers")
    args = parser.parse_args(argv)
    parse_faults()
    data_dir = get_base_dir() / DATA_DIR_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    count = MAX_SHARD if args.num_files == -1 else min(args.num_files, MAX_SHARD)
    ids = [*range(count), MAX_SHARD]
    print(f"Downloading {len(ids)} shards using {args.num_workers} workers...", flush=True)
    print(f"Target directory: {data_dir}", flush=True)
    print(flush=True)
    offline = os.environ.get("SPEEDQ_SIM_NO_NETWORK") == "1"
    ok = sum(download(data_dir / f"shard_{i:05d}.parquet", i, offline) for i in ids)
    stage_pause()
    print(f"Done! Downloaded: {ok}/{len(ids)} shards to {data_dir}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
