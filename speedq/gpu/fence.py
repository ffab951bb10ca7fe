"""The run-directory fence: exactly one attempt works in a run directory, whatever Redis says.

The worker's records can be wrong about what runs (a launch whose answer was lost, a cancel that
took a while), so the GPU side fences itself where the work happens:
- announce: a runner's first act is `attempt-<n>.json` = who it is (call id, host, pid), so a
  worker that never saw its launch confirmed can adopt it instead of launching again;
- claim: before training, the runner writes its attempt number into `claim.json`, refusing if a
  newer attempt holds it; it checks the claim again before every stage and every checkpoint, and
  a runner whose attempt is no longer the newest stops without writing (outcome `fenced`);
- train lock: every training process (speedq.gpu.rank) holds `train.lock` shared for its whole
  life, and a runner takes it exclusive once after claiming, so a new attempt's training cannot
  start while an older one's processes live on (torchrun's ranks outlive a killed runner).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from speedq.gpu import layout, proctree
from speedq.gpu.proctree import start_ticks

# How long a new attempt waits for an older attempt's training processes to let go of the run
# dir (they see the newer claim within RANK_CHECK_EVERY_S and exit) before it gives up.
TRAIN_LOCK_WAIT_S = 60.0
RANK_CHECK_EVERY_S = 1.0
FENCED_EXIT = 75  # a training process that found its attempt superseded exits with this


class Fenced(Exception):
    """This attempt no longer owns the run directory: a newer one claimed it."""


class Announcement(BaseModel):
    attempt: int
    call_id: str
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    started_at: float = Field(default_factory=time.time)


class Claim(BaseModel):
    attempt: int
    call_id: str | None = None
    claimed_at: float = Field(default_factory=time.time)


def local_handle(pid: int, run_dir: str | Path) -> str:
    """A local runner's call id, `<pid>@<start ticks>:<run dir>`: the start time tells the runner
    from an unrelated process that got the same pid later."""
    return f"{pid}@{start_ticks(pid)}:{run_dir}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def announce(run_dir: str | Path, attempt: int, call_id: str | None = None) -> Announcement:
    """The runner's first act. Without a call id (a local runner) it names itself by its handle."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    note = Announcement(attempt=attempt, call_id=call_id or local_handle(os.getpid(), run_dir))
    _write_atomic(run_dir / layout.announce_name(attempt), note.model_dump_json())
    return note


def read_announcement(run_dir: str | Path, attempt: int) -> Announcement | None:
    try:
        return Announcement.model_validate_json((Path(run_dir) / layout.announce_name(attempt)).read_text())
    except (OSError, ValueError):
        return None


def attempt_announcing(run_dir: str | Path, call_id: str) -> int | None:
    """The attempt whose runner announced `call_id`, if any did."""
    for path in Path(run_dir).glob(f"{layout.FENCE_PREFIX}*.json"):
        try:
            note = Announcement.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
        if note.call_id == call_id:
            return note.attempt
    return None


def read_claim(run_dir: str | Path) -> Claim | None:
    try:
        return Claim.model_validate_json((Path(run_dir) / layout.CLAIM).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def _claim_lock(run_dir: Path) -> Iterator[None]:
    # Serializes claims on one machine; across Modal containers the claim file alone decides.
    with open(run_dir / f".{layout.CLAIM}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def claim(run_dir: str | Path, attempt: int, call_id: str | None = None) -> Claim:
    """Take the run dir for `attempt`; raises Fenced if a newer attempt holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _claim_lock(run_dir):
        held = read_claim(run_dir)
        if held is not None and held.attempt > attempt:
            raise Fenced(f"attempt {held.attempt} holds the run directory; attempt {attempt} stops")
        mine = Claim(attempt=attempt, call_id=call_id)
        _write_atomic(run_dir / layout.CLAIM, mine.model_dump_json())
        return mine


def check(run_dir: str | Path, attempt: int) -> None:
    """Raises Fenced if a newer attempt has claimed the run dir since."""
    held = read_claim(run_dir)
    if held is not None and held.attempt > attempt:
        raise Fenced(f"attempt {held.attempt} claimed the run directory; attempt {attempt} stops without writing")


def guarded(run_dir: str | Path, attempt: int, callback: Callable[[], None] | None) -> Callable[[], None] | None:
    """`callback` (the Modal Volume commit after a checkpoint) behind a claim check. A superseded
    attempt's stages end before Fenced leaves the callback (they carry its mark), so nothing of
    it goes on writing while the runner unwinds."""
    if callback is None:
        return None

    def checked() -> None:
        try:
            check(run_dir, attempt)
        except Fenced:
            proctree.end_marked(run_dir, up_to_attempt=attempt)
            raise
        callback()

    return checked


def take_training_lock(run_dir: str | Path, wait_s: float = TRAIN_LOCK_WAIT_S) -> None:
    """Wait until no training process of any attempt holds the run dir (called after claiming,
    so processes of older attempts starting later see the newer claim and stop). Raises
    TimeoutError naming the wait if they do not let go."""
    path = Path(run_dir) / layout.TRAIN_LOCK
    deadline = time.monotonic() + wait_s
    with open(path, "a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"training processes of an earlier attempt still hold {path} after {wait_s:.0f}s"
                    ) from None
                time.sleep(0.1)


def hold_training_lock(run_dir: str | Path) -> int:
    """A training process's share of the run dir, held until it exits (returns the fd)."""
    fd = os.open(Path(run_dir) / layout.TRAIN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
