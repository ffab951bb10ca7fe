"""speedq/gpu/offload.py on temporary directories: a local run dir and its Volume twin."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import pytest

from speedq.gpu import layout, offload

CKPT = Path("base_checkpoints/d4")


def write_checkpoint(run: Path, step: int, world_size: int = 2, torn: bool = False) -> None:
    ckpt = run / CKPT
    ckpt.mkdir(parents=True, exist_ok=True)
    names = [f"model_{step:06d}.pt", *(f"optim_{step:06d}_rank{r}.pt" for r in range(world_size))]
    for name in names:
        with zipfile.ZipFile(ckpt / name, "w") as zf:
            zf.writestr("data", f"{name}".encode() * 100)
    if torn:
        (ckpt / names[-1]).write_bytes(b"PK\x03\x04 half")
    (ckpt / f"meta_{step:06d}.json").write_text(json.dumps({"step": step}))


class Vol:
    def __init__(self) -> None:
        self.commits = self.reloads = 0

    def commit(self) -> None:
        self.commits += 1

    def reload(self) -> None:
        self.reloads += 1


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    local, volume = tmp_path / "local", tmp_path / "vol" / "runs" / "alpha" / "d4"
    local.mkdir(parents=True)
    volume.mkdir(parents=True)
    return local, volume


def offloader(local: Path, volume: Path, vol: Vol, attempt: int = 2, **kw: object) -> offload.Offloader:
    return offload.Offloader(local_run=local, volume_run=volume, ckpt_rel=CKPT, world_size=2, attempt=attempt,
                             commit=vol.commit, reload=vol.reload, **kw)


def test_complete_checkpoints_and_run_files_reach_the_volume_torn_ones_do_not(dirs) -> None:
    local, volume = dirs
    vol = Vol()
    write_checkpoint(local, 5)
    write_checkpoint(local, 10, torn=True)
    (local / layout.LOG).write_text("step 00001/00020\n")
    (local / layout.PROGRESS).write_text(json.dumps({"stage": "base_train", "step": 10}))
    (local / layout.CLAIM).write_text(json.dumps({"attempt": 2}))
    (local / layout.announce_name(2)).write_text("{}")
    off = offloader(local, volume, vol)
    off.sync_once()
    assert offload.complete_steps(volume / CKPT, 2) == [5]
    assert not (volume / CKPT / "model_000010.pt").exists()
    for name in (layout.LOG, layout.announce_name(2)):
        assert (volume / name).read_bytes() == (local / name).read_bytes()
    assert not (volume / layout.CLAIM).exists()  # the Volume's claim is the containers' own (modal_body.claim)
    progress = json.loads((volume / layout.PROGRESS).read_text())
    assert progress["step"] == 10 and progress["offloaded_step"] == 5 and progress["commit_failures"] == 0
    assert (vol.reloads, vol.commits) == (1, 1)
    assert not list(volume.rglob("*.part"))


def test_a_claim_made_while_a_sync_copies_is_not_written_over(dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls of one attempt: the second claims the Volume after the first's sync checked the
    claim and while it copies. The first's local claim must not land on top of it, or the newer
    call would find itself overtaken by the older one (which the worker no longer watches)."""
    local, volume = dirs
    first = json.dumps({"attempt": 1, "call_id": "fc-first"})
    (local / layout.CLAIM).write_text(first)
    (volume / layout.CLAIM).write_text(first)
    write_checkpoint(local, 5)
    off = offloader(local, volume, Vol(), attempt=1, call_id="fc-first")
    copy_checkpoints = off._copy_checkpoints

    def second_call_claims_meanwhile() -> None:
        (volume / layout.CLAIM).write_text(json.dumps({"attempt": 1, "call_id": "fc-second"}))
        copy_checkpoints()

    monkeypatch.setattr(off, "_copy_checkpoints", second_call_claims_meanwhile)
    off.sync_once()
    assert offload.claim_holder(volume) == (1, "fc-second")
    off.sync_once()  # the next sync sees it and stops
    assert off.superseded_by == 1


def test_later_stage_outputs_reach_the_volume_but_not_the_shared_data_links(dirs, tmp_path: Path) -> None:
    local, volume = dirs
    shared = tmp_path / "data" / "base_data_climbmix"
    shared.mkdir(parents=True)
    (shared / "shard_00000.parquet").write_bytes(b"x" * 10)
    (local / "base_data_climbmix").symlink_to(shared, target_is_directory=True)
    sft = local / "chatsft_checkpoints" / "d4"
    sft.mkdir(parents=True)
    (sft / "model_000100.pt").write_bytes(b"weights")
    (local / "report").mkdir()
    (local / "report" / "report.md").write_text("# done")
    (local / layout.LEDGER).write_text(json.dumps({"chat_sft": {}}))
    off = offloader(local, volume, Vol())
    off.sync_once()
    assert (volume / "chatsft_checkpoints" / "d4" / "model_000100.pt").read_bytes() == b"weights"
    assert (volume / "report" / "report.md").read_text() == "# done"
    assert (volume / layout.LEDGER).exists()
    assert not (volume / "base_data_climbmix").exists()
    (local / "report" / "report.md").write_text("# done, with more")
    off.sync_once()
    assert (volume / "report" / "report.md").read_text() == "# done, with more"


def test_a_resume_fetches_the_newest_complete_checkpoint(dirs, tmp_path: Path) -> None:
    _, volume = dirs
    write_checkpoint(volume, 5)
    write_checkpoint(volume, 10)
    write_checkpoint(volume, 15, torn=True)
    (volume / layout.LEDGER).write_text("{}")
    (volume / "chatsft_checkpoints" / "d4").mkdir(parents=True)
    (volume / "chatsft_checkpoints" / "d4" / "model_000100.pt").write_bytes(b"sft")
    fresh = tmp_path / "fresh"
    assert offload.fetch(volume, fresh, CKPT, 2) == 10
    assert (fresh / "chatsft_checkpoints" / "d4" / "model_000100.pt").read_bytes() == b"sft"  # chat_eval needs it
    assert sorted(p.name for p in (fresh / CKPT).iterdir()) == [
        "meta_000010.json", "model_000010.pt", "optim_000010_rank0.pt", "optim_000010_rank1.pt"]
    assert (fresh / layout.LEDGER).exists()


def test_a_newer_claim_on_the_volume_stops_the_copies_and_reaches_the_runners_fence(dirs) -> None:
    local, volume = dirs
    vol = Vol()
    (local / layout.CLAIM).write_text(json.dumps({"attempt": 2}))
    (volume / layout.CLAIM).write_text(json.dumps({"attempt": 3}))
    write_checkpoint(local, 5)
    off = offloader(local, volume, vol)
    off.sync_once()
    assert off.superseded_by == 3
    assert not (volume / CKPT).exists()  # nothing of attempt 2 reached the Volume
    assert offload.read_claim(volume) == 3 and offload.read_claim(local) == 3  # the runner sees it
    assert vol.commits == 0


def test_each_saves_blocking_time_comes_from_the_step_lines_around_it(dirs) -> None:
    local, volume = dirs
    off = offloader(local, volume, Vol(), save_every=5)
    log = local / layout.LOG

    def line(step: int, dt_ms: float) -> str:
        return f"step {step:05d}/00020 (25.00%) | loss: 3.0 | lrm: 1.00 | dt: {dt_ms:.2f}ms | tok/sec: 1 | eta: 1.0m\n"

    log.write_text(line(4, 100) + line(5, 100))
    off.tail_once(now=100.0)
    with open(log, "a") as fh:
        fh.write(line(6, 250))  # seen 2.75 s after step 5: 0.25 s of it was the step itself
    off.tail_once(now=102.75)
    with open(log, "a") as fh:
        fh.write(line(7, 100) + "partial line without its end")
    off.tail_once(now=103.0)
    assert off.saves == [2.5]
    assert off.report().save_blocked_s == [2.5]


def test_commit_and_reload_failures_are_reported_apart(dirs) -> None:
    local, volume = dirs

    def boom() -> None:
        raise RuntimeError("there are open files preventing the operation")

    (local / layout.PROGRESS).write_text("{}")
    off = offload.Offloader(local_run=local, volume_run=volume, ckpt_rel=CKPT, world_size=2, attempt=1,
                            commit=lambda: None, reload=boom)
    off.sync_once()
    assert (off.reloads.count, off.commits.count) == (1, 0)
    off.reload, off.commit = (lambda: None), boom
    off.sync_once()
    assert (off.reloads.count, off.commits.count) == (1, 1)
    progress = json.loads((volume / layout.PROGRESS).read_text())
    assert progress["reload_failures"] == 1 and "open files" in progress["last_reload_error"]


def test_on_checkpoint_only_wakes_the_copier(dirs) -> None:
    """The runner's callback returns while a (slow) commit is still going on."""
    local, volume = dirs
    started, release = threading.Event(), threading.Event()

    def slow_commit() -> None:
        started.set()
        release.wait(30)

    off = offload.Offloader(local_run=local, volume_run=volume, ckpt_rel=CKPT, world_size=2, attempt=1,
                            commit=slow_commit, reload=lambda: None).start()
    try:
        off.request()
        assert started.wait(10)
        off.request()  # during the commit: returns at once
        assert not release.is_set()
    finally:
        release.set()
        off.close()


def test_another_call_of_the_same_attempt_supersedes_this_one(dirs) -> None:
    local, volume = dirs
    stopped: list[bool] = []
    (volume / layout.CLAIM).write_text(json.dumps({"attempt": 2, "call_id": "fc-b"}))
    write_checkpoint(local, 5)
    off = offloader(local, volume, Vol(), call_id="fc-a", on_superseded=lambda: stopped.append(True))
    off.sync_once()
    off.sync_once()
    assert stopped == [True] and off.superseded_by == 2 and not (volume / CKPT).exists()
    assert offload.superseded((2, "fc-a"), 2, "fc-a") is False  # Modal restarting the same call
    assert offload.superseded((2, None), 2, "fc-a") is False  # a claimer that gave no call id
    assert offload.superseded((1, "fc-x"), 2, "fc-a") is False
    assert offload.superseded((3, None), 2, "fc-a") is True
