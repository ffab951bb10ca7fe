"""Checkpoints and run files from container-local disk to the Modal Volume, in the background.

Inside a Modal container the runner works in a local run directory (cwd, open log, checkpoints
all on local disk), because `Volume.commit()` also reloads, which Modal refuses while any open file
or working directory is inside the Volume; and because writing GBs of checkpoint over the network
would stall the GPUs. This module:
- `fetch` brings the Volume's run files and its newest complete checkpoint to local disk before
  the runner starts (a resume starts from there), and `fetch_data` the prepared shards and tokenizer;
- `Offloader` copies each new complete checkpoint, every other stage output (SFT checkpoints,
  eval results, reports), and then the log, progress, ledger, result, claim and announcement files
  to the Volume and commits, on its own thread: the runner's on_checkpoint
  only wakes it. Before it copies it reloads the Volume and reads the run's claim there: if a newer
  attempt holds it, it copies nothing more and puts that claim into the local run dir, where the
  runner's own fence check sees it and stops;
- it measures how long each checkpoint save blocked training (the gap between the step lines
  around the save, less that step's own time) and counts commit and reload failures apart; all
  of it goes into the Volume's copy of progress.json.

Plain code over two paths and two callables (commit, reload), so tests run it on temporary dirs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from speedq.gpu import layout
from speedq.schemas import Progress

log = logging.getLogger(__name__)

SYNC_EVERY_S = 60.0  # log and progress reach the Volume at least this often
TAIL_EVERY_S = 0.25  # how often the log is read for step lines (the save-time resolution)
KEEP_SAVES = 50  # save timings kept in progress
STEP_LINE = re.compile(r"^step (?P<step>\d+)/\d+ .*?\| dt: (?P<dt>[\d.]+)ms")
_ATTEMPT_FILE = re.compile(r"(?:attempt|result)-\d+\.json")


def run_files(run_dir: Path) -> list[Path]:
    """The small files of a run directory the Volume keeps (not checkpoints, not data links)."""
    names = (layout.LOG, layout.PROGRESS, layout.LEDGER, layout.CLAIM, layout.FORCE_MARKER)
    found = [run_dir / n for n in names if (run_dir / n).is_file()]
    if run_dir.is_dir():
        found += sorted(p for p in run_dir.iterdir() if _ATTEMPT_FILE.fullmatch(p.name) and p.is_file())
    return found


def stage_outputs(run_dir: Path, skip: Path) -> list[Path]:
    """Every other file the stages wrote (eval results, SFT checkpoints, reports), relative to the
    run dir: not the small run files, not `skip` (base checkpoints, copied whole per step), not
    the links to shared data, not half-copied files."""
    small = {p.name for p in run_files(run_dir)}
    found = []
    for root, dirs, files in os.walk(run_dir):
        here = Path(root)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink() and here / d != run_dir / skip]
        for name in files:
            path = here / name
            if path.is_symlink() or name.endswith(".part") or (here == run_dir and name in small):
                continue
            found.append(path.relative_to(run_dir))
    return sorted(found)


def read_claim(run_dir: Path) -> int | None:
    """The attempt number in a run dir's claim file (a bare number or {"attempt": n, ...})."""
    return claim_holder(run_dir)[0]


def claim_holder(run_dir: Path) -> tuple[int | None, str | None]:
    """(attempt, call id) of a run dir's claim; the call id is None where the claimer gave none."""
    try:
        raw = json.loads((run_dir / layout.CLAIM).read_text())
    except (OSError, ValueError):
        return None, None
    attempt = raw.get("attempt") if isinstance(raw, dict) else raw
    call_id = raw.get("call_id") if isinstance(raw, dict) else None
    return (attempt if isinstance(attempt, int) else None), (call_id if isinstance(call_id, str) else None)


def superseded(holder: tuple[int | None, str | None], attempt: int, call_id: str | None) -> bool:
    """Does the claim belong to someone newer: a later attempt, or another call of this attempt
    (a spawn retried by the client after its answer was lost: the latest claim wins)?"""
    held_attempt, held_call = holder
    if held_attempt is None:
        return False
    if held_attempt != attempt:
        return held_attempt > attempt
    return bool(held_call and call_id and held_call != call_id)


def copy_file(src: Path, dest: Path) -> None:
    """Whole or not at all: a reader (or a commit in between) never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def complete_steps(ckpt_dir: Path, world_size: int) -> list[int]:
    """Steps whose every file is there and readable, newest first."""
    from speedq.gpu import runner

    return [s for s in runner.checkpoint_steps(ckpt_dir)
            if all(runner._readable(p) for p in runner.checkpoint_files(ckpt_dir, s, world_size))]


def fetch(volume_run: Path, local_run: Path, ckpt_rel: Path, world_size: int) -> int | None:
    """The Volume's run files, stage outputs and newest complete base checkpoint onto local disk;
    that checkpoint's step, or None."""
    from speedq.gpu import runner

    local_run.mkdir(parents=True, exist_ok=True)
    for src in run_files(volume_run):
        copy_file(src, local_run / src.name)
    if volume_run.is_dir():  # what later stages need when the ledger skips the ones before them
        for rel in stage_outputs(volume_run, ckpt_rel):
            copy_file(volume_run / rel, local_run / rel)
    step = runner.newest_complete_checkpoint(volume_run / ckpt_rel, world_size)
    if step is not None:
        for src in runner.checkpoint_files(volume_run / ckpt_rel, step, world_size):
            copy_file(src, local_run / ckpt_rel / src.name)
    return step


def data_files(shards: int) -> list[Path]:
    """What a run reads from the shared data dir: the tokenizer and its training shards (the
    runner's names for them)."""
    from speedq.gpu import nanochat

    return [Path(nanochat.TOKENIZER_DIR, name) for name in nanochat.TOKENIZER_FILES] + [
        Path(nanochat.SHARDS_DIR, nanochat.shard_name(i)) for i in [*range(shards), nanochat.VAL_SHARD]]


def fetch_data(volume_data: Path, local_data: Path, shards: int) -> bool:
    """The tokenizer and the first `shards` shards onto local disk (training reads them for hours:
    open files on the Volume would block every commit). False if the Volume lacks any of them."""
    wanted = [volume_data / rel for rel in data_files(shards)]
    if not all(p.is_file() for p in wanted):
        return False
    for src in wanted:
        dest = local_data / src.relative_to(volume_data)
        if not (dest.is_file() and dest.stat().st_size == src.stat().st_size):
            copy_file(src, dest)
    ledger = volume_data / layout.DATA_LEDGER
    if ledger.is_file():
        copy_file(ledger, local_data / layout.DATA_LEDGER)
    return True


def save_blocked_s(before: tuple[float, int], after: tuple[float, int, float]) -> float:
    """Training time lost to a save between two step lines: (seen_at, step) and (seen_at, step, dt_s)."""
    return max(0.0, after[0] - before[0] - after[2])


@dataclass
class Failures:
    """One Volume operation's failures: how many, and the last one's words."""

    what: str
    count: int = 0
    last: str | None = None

    def run(self, op: Callable[[], None]) -> None:
        try:
            op()
        except Exception as exc:  # noqa: BLE001 - counted and shown; training goes on
            self.count += 1
            self.last = f"{type(exc).__name__}: {exc}"
            log.warning("volume %s failed: %s", self.what, exc)


class OffloadReport(BaseModel):
    """The offload's figures, which go into the Volume's progress.json (Progress has these fields)."""

    save_blocked_s: list[float]
    offloaded_step: int | None
    commit_failures: int
    reload_failures: int
    last_commit_error: str | None
    last_reload_error: str | None


@dataclass
class Offloader:
    """Copies a local run dir to its Volume twin on a thread of its own; see the module doc."""

    local_run: Path
    volume_run: Path
    ckpt_rel: Path
    world_size: int
    attempt: int
    commit: Callable[[], None]
    reload: Callable[[], None]
    save_every: int | None = None
    call_id: str | None = None
    on_superseded: Callable[[], None] = lambda: None  # stop the local work (the runner's stages)
    saves: list[float] = field(default_factory=list)  # seconds each save blocked training
    commits: Failures = field(default_factory=lambda: Failures("commit"))
    reloads: Failures = field(default_factory=lambda: Failures("reload"))
    offloaded_step: int | None = None
    superseded_by: int | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _log_pos: int = 0
    _last_step: tuple[float, int] | None = None

    # -- the runner's side: never blocks ---------------------------------------------------

    def request(self) -> None:
        """on_checkpoint: wake the copier and return at once."""
        self._wake.set()

    def start(self) -> Offloader:
        for target in (self._copier, self._tailer):
            thread = threading.Thread(target=target, daemon=True, name=f"speedq-offload-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop the threads and do a last sync (the attempt's result and final log included)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self.tail_once()
        self.sync_once()

    # -- the threads -----------------------------------------------------------------------

    def _copier(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SYNC_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync_once()
            except Exception as exc:  # noqa: BLE001 - a failed copy must never end the training
                log.warning("offload to the Volume failed: %s", exc)

    def _tailer(self) -> None:
        while not self._stop.wait(TAIL_EVERY_S):
            try:
                self.tail_once()
            except OSError:
                pass

    def tail_once(self, now: float | None = None) -> None:
        """Read the new part of the local log; time each save from the step lines around it."""
        path = self.local_run / layout.LOG
        try:
            with open(path, "rb") as fh:
                fh.seek(self._log_pos)
                chunk = fh.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self._log_pos += end
        now = time.monotonic() if now is None else now
        for line in chunk[:end].decode(errors="replace").splitlines():
            match = STEP_LINE.match(line)
            if not match:
                continue
            step, dt = int(match["step"]), float(match["dt"]) / 1000
            before = self._last_step
            if before and self.save_every and step == before[1] + 1 and before[1] % self.save_every == 0 and before[1]:
                with self._lock:
                    self.saves = [*self.saves, round(save_blocked_s(before, (now, step, dt)), 3)][-KEEP_SAVES:]
            self._last_step = (now, step)

    def sync_once(self) -> None:
        """Reload, check the fence, copy what is new, commit."""
        self.reloads.run(self.reload)
        holder = claim_holder(self.volume_run)
        if superseded(holder, self.attempt, self.call_id):
            if self.superseded_by is None:
                log.warning("attempt %d (%s) superseded by attempt %s (%s): nothing more goes to the Volume",
                            self.attempt, self.call_id, *holder)
                copy_file(self.volume_run / layout.CLAIM, self.local_run / layout.CLAIM)  # the runner's fence sees it
                self.superseded_by = holder[0]
                self.on_superseded()
            return
        self._copy_checkpoints()
        for rel in stage_outputs(self.local_run, self.ckpt_rel):
            src, dest = self.local_run / rel, self.volume_run / rel
            st = src.stat()
            if not dest.exists() or dest.stat().st_size != st.st_size or dest.stat().st_mtime < st.st_mtime:
                copy_file(src, dest)
        # the ledger last: the Volume never says a stage is done before its outputs are there.
        # Not the claim: the Volume's is the containers' own (modal_body.claim), and the local
        # copy, written back, would erase a newer call's claim made since the check above.
        for src in run_files(self.local_run):
            if src.name not in (layout.PROGRESS, layout.CLAIM):
                copy_file(src, self.volume_run / src.name)
        self._write_progress()
        self.commits.run(self.commit)

    def _copy_checkpoints(self) -> None:
        from speedq.gpu import runner

        local_ckpt, volume_ckpt = self.local_run / self.ckpt_rel, self.volume_run / self.ckpt_rel
        on_volume = set(complete_steps(volume_ckpt, self.world_size)) if volume_ckpt.is_dir() else set()
        for step in sorted(set(complete_steps(local_ckpt, self.world_size)) - on_volume):
            # meta last: a reader counts a step complete only with all files, the meta among them
            files = sorted(runner.checkpoint_files(local_ckpt, step, self.world_size),
                           key=lambda p: p.suffix == ".json")
            for src in files:
                copy_file(src, volume_ckpt / src.name)
            self.offloaded_step = step
        if volume_ckpt.is_dir():
            runner.prune_checkpoints(volume_ckpt, self.world_size)

    def _write_progress(self) -> None:
        """The runner's progress with the offload's figures, into the Volume's progress.json."""
        src = self.local_run / layout.PROGRESS
        try:
            progress = Progress.model_validate_json(src.read_bytes())
        except (OSError, ValidationError):
            progress = Progress()
        with self._lock:
            progress = progress.model_copy(update=self.report().model_dump())
        dest = self.volume_run / layout.PROGRESS
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(progress.model_dump_json())
        os.replace(tmp, dest)

    def report(self) -> OffloadReport:
        return OffloadReport(
            save_blocked_s=list(self.saves),
            offloaded_step=self.offloaded_step,
            commit_failures=self.commits.count,
            reload_failures=self.reloads.count,
            last_commit_error=self.commits.last,
            last_reload_error=self.reloads.last,
        )
