"""speedq's nanochat rules against nanochat's own numbers.

tests/data/nanochat/sizing.json was recorded by running base_train.py's own sizing code on
nanochat's meta-device models (record_sizing.py, at the known-good commit), so these tests do not
check speedq's arithmetic against itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from speedq import config
from speedq.gpu import data_files, nanochat, runner
from speedq.schemas import JobSpec, RunRequest, describe

DATA = Path(__file__).parent / "data" / "nanochat"
TABLE = json.loads((DATA / "sizing.json").read_text())
REAL = {(row["depth"], row["ratio"]): row for row in TABLE["rows"]}


def test_the_table_is_of_the_known_good_commit() -> None:
    assert TABLE["nanochat_commit"] == nanochat.KNOWN_GOOD_COMMIT == config.DEFAULT_REPO_REF


@pytest.mark.parametrize("depth", range(2, 33))
def test_sizing_reproduces_nanochats_numbers(depth: int) -> None:
    for ratio in (8.0, 12.0):
        row = REAL[(depth, ratio)]
        assert nanochat.scaling_params(depth) == row["scaling_params"]
        assert nanochat.flops_per_token(depth) == row["flops_per_token"]
        size = nanochat.size_run(depth, "full", "H100", 8, {"target-param-data-ratio": ratio})
        assert (size.total_batch_size, size.num_iterations) == (row["total_batch_size"], row["num_iterations"])


def test_the_figures_nanochat_publishes() -> None:
    """The issue's figures: d2 131,072 tokens a step; d20 and d24 1,048,576; d32 2,097,152 and 6,400 steps."""
    assert REAL[(2, 8.0)]["total_batch_size"] == 131_072
    assert REAL[(20, 8.0)]["total_batch_size"] == REAL[(24, 8.0)]["total_batch_size"] == 1_048_576
    assert (REAL[(32, 8.0)]["total_batch_size"], REAL[(32, 8.0)]["num_iterations"]) == (2_097_152, 6400)


def request_for(spec: JobSpec) -> RunRequest:
    return RunRequest(job_id="sq-1", attempt=1, model=spec.model, mode=spec.mode, nproc=spec.gpu.count,
                      gpu_type=spec.gpu.type, commit=nanochat.KNOWN_GOOD_COMMIT, repo="r", run_dir="/r", data_dir="/d",
                      cache_dir="/c", train_args=dict(spec.train_args))


def flag(flags: tuple[str, ...], name: str) -> int:
    return int(next(f for f in flags if f.startswith(f"--{name}=")).split("=", 1)[1])


@pytest.mark.parametrize("gpu_type", config.GPU_TYPES)
def test_every_accepted_spec_passes_nanochats_batch_assertion(gpu_type: str) -> None:
    """Depths 2..32 x GPU counts 1..8: speedq accepts a spec only if the base_train argv it builds
    passes `total_batch_size % (device_batch_size * max_seq_len * world_size) == 0` with the batch
    nanochat computes; it refuses one only when no device batch from the GPU's default down fits."""
    backend = "local" if gpu_type == "CPU" else "modal"
    accepted = refused = 0
    for depth in range(2, 33):
        total = REAL[(depth, float(nanochat.PARAM_DATA_RATIO))]["total_batch_size"]
        for count in range(1, 9):
            try:
                spec = JobSpec(team="t", model=f"d{depth}", gpu=f"{gpu_type}:{count}", backend=backend)
            except ValidationError as exc:
                line = describe(exc)
                if gpu_type == "CPU" and count > 1:
                    assert "CPU:1" in line
                    continue
                assert "to be a multiple of device-batch-size x max-seq-len" in line and "\n" not in line
                assert all(total % (b * 2048 * count) for b in range(1, nanochat.DEVICE_BATCH_SIZE[gpu_type] + 1))
                refused += 1
                continue
            train = runner.plan(request_for(spec))[3]
            assert train.name == "base_train"
            device = flag(train.flags, "device-batch-size")
            assert total % (device * 2048 * count) == 0, (depth, count, device)
            assert device <= nanochat.DEVICE_BATCH_SIZE[gpu_type]
            accepted += 1
    assert accepted and (refused or gpu_type == "CPU")  # odd GPU counts are refused, powers of two run


def test_train_args_change_the_batch_rule_as_nanochat_would() -> None:
    three = dict(team="t", model="d12", gpu="H100:3")
    with pytest.raises(ValidationError):
        JobSpec(**three)
    spec = JobSpec(**three, train_args={"total-batch-size": 3 * 2**18})  # a multiple of 3 x 2048 x 16
    assert spec.sizing().device_batch_size == 16
    with pytest.raises(ValidationError, match="device-batch-size 5 fails"):
        JobSpec(team="t", model="d12", gpu="H100:8", train_args={"device-batch-size": 5})


@pytest.mark.parametrize("depth", range(2, 33))
def test_default_save_interval_is_two_percent_of_the_real_step_count(depth: int) -> None:
    steps = REAL[(depth, 8.0)]["num_iterations"]
    spec = JobSpec(team="t", model=f"d{depth}", gpu="H100:8")
    every = runner.save_every_for(request_for(spec))
    assert abs(every - 0.02 * steps) <= 0.1 * 0.02 * steps, (steps, every)


def test_shard_rule_follows_speedrun_sh() -> None:
    """speedrun.sh downloads 170 shards for its d24 (ratio 8): ~150 needed plus 20 padding."""
    d24 = JobSpec(team="t", model="d24", gpu="H100:8")
    assert runner.shards_needed(request_for(d24)) == 170
    specs = [JobSpec(team="t", model=f"d{d}", gpu="H100:8") for d in (2, 12, 20, 24, 32)]
    sizes = [runner.shards_needed(request_for(spec)) for spec in specs]
    assert sizes == sorted(sizes) and sizes[0] >= nanochat.MIN_SHARDS
    smoke = JobSpec(team="t", model="d24", mode="smoke", gpu="H100:8")
    assert runner.shards_needed(request_for(smoke)) == nanochat.MIN_SHARDS


def test_parquet_readability(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "shard_00000.parquet"
    pq.write_table(pyarrow.table({"text": ["a document"] * 100}), path)
    assert data_files.parquet_readable(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])  # a download cut short
    assert not data_files.parquet_readable(path)
    path.write_bytes(b"<html>rate limited</html>")
    assert not data_files.parquet_readable(path)


def nanochat_source() -> str | None:
    """The real nanochat: SPEEDQ_NANOCHAT_REPO, else the shared bundle above the checkout."""
    import os

    if os.environ.get("SPEEDQ_NANOCHAT_REPO"):
        return os.environ["SPEEDQ_NANOCHAT_REPO"]
    for parent in Path(__file__).resolve().parents:
        bundle = parent / "shared" / "nanochat" / "nanochat.bundle"
        if bundle.exists():
            return str(bundle)
    return None


@pytest.mark.real
def test_the_recorded_table_is_what_nanochat_computes(tmp_path: Path) -> None:
    """Re-runs record_sizing.py on the real nanochat (needs torch) and compares with sizing.json."""
    import subprocess
    import sys

    pytest.importorskip("torch", reason="the real nanochat's model code needs torch")
    source = nanochat_source()
    if source is None:
        pytest.skip("no nanochat: set SPEEDQ_NANOCHAT_REPO or put the bundle at ../shared/nanochat/")
    checkout = tmp_path / "nanochat"
    subprocess.run(["git", "clone", "-q", source, str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", nanochat.KNOWN_GOOD_COMMIT], check=True)
    done = subprocess.run([sys.executable, str(DATA / "record_sizing.py"), str(checkout)], capture_output=True,
                          text=True, check=True, timeout=300)
    assert json.loads(done.stdout) == TABLE
