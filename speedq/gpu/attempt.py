"""One attempt of a run: its log, its progress.json and its stages' processes, as they run."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speedq.gpu import nanochat_log
from speedq.gpu.checkpoints import newest_complete_checkpoint, prune_checkpoints
from speedq.gpu.ledger import write_json_atomic
from speedq.schemas import Progress, RunRequest

PROGRESS_EVERY_S = 0.25  # at most four progress.json writes a second
SCAN_EVERY_S = 1.0  # how often the checkpoint directory is looked at during training
ON_CHECKPOINT_EVERY_S = 120.0  # Modal commits the Volume at least this often (logs, progress)


@dataclass
class Attempt:
    """What one attempt tracks while it runs: progress, the log, the checkpoint callback."""

    req: RunRequest
    log_path: Path
    on_checkpoint: Callable[[], None] | None = None
    progress: Progress = field(default_factory=Progress)
    progress_path: Path | None = None
    ckpt_dir: Path | None = None
    save_every: int | None = None
    last_written: float = 0.0
    written: Progress | None = None  # what progress.json holds (but its time), to rewrite it only on a change
    last_callback: float = field(default_factory=time.monotonic)
    last_scan: float = 0.0

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(text.rstrip("\n") + "\n")

    def write_progress(self, force: bool = False) -> None:
        """Throttled, and only on a change: updated_at then says when the run last moved,
        which is what a stall detector needs (a hung run must not look alive)."""
        now = time.monotonic()
        if self.progress_path is None or (not force and now - self.last_written < PROGRESS_EVERY_S):
            return
        content = self.progress.model_copy(update={"updated_at": 0.0}, deep=True)
        if content == self.written:
            return
        self.progress.updated_at = time.time()
        write_json_atomic(self.progress_path, self.progress.model_dump_json())
        self.last_written, self.written = now, content

    def scan_checkpoints(self, force: bool = False) -> None:
        """Newest complete checkpoint into progress; the callback and pruning on a new one."""
        now = time.monotonic()
        if self.ckpt_dir is None or (not force and now - self.last_scan < SCAN_EVERY_S):
            return
        self.last_scan = now
        step = newest_complete_checkpoint(self.ckpt_dir, self.req.nproc)
        if step is not None and step != self.progress.checkpoint_step:
            self.progress.checkpoint_step = step
            prune_checkpoints(self.ckpt_dir, self.req.nproc)
            self.write_progress(force=True)
            self.callback()

    def callback(self) -> None:
        self.last_callback = time.monotonic()
        if self.on_checkpoint is not None:
            self.on_checkpoint()

    def tick(self, urgent: bool = False) -> None:
        self.scan_checkpoints(force=urgent)
        self.write_progress(force=urgent)
        if time.monotonic() - self.last_callback >= ON_CHECKPOINT_EVERY_S:
            self.callback()

    def parse(self, line: str) -> bool:
        """Progress from base_train's lines. True on the first step after a save: the checkpoint
        and progress files are then brought up to date at once, so a run killed a moment later
        still shows the worker how far it got past its checkpoint (the steps a resume redoes)."""
        step = nanochat_log.step_line(line)
        if step is None:
            self._metrics(line)
            return False
        p = self.progress
        p.step, p.total = step.done, step.total
        p.loss, p.eta_s = step.loss, step.eta_s
        if nanochat_log.timed(step):
            n = p.timed_steps
            p.tokens_per_s = ((p.tokens_per_s or 0.0) * n + (step.tokens_per_s or 0)) / (n + 1)
            p.mfu_pct = ((p.mfu_pct or 0.0) * n + (step.mfu_pct or 0.0)) / (n + 1)
            p.timed_steps = n + 1
        every = self.save_every
        # nanochat saves step S's checkpoint before training step S, which it prints as `step S`.
        return bool(every and step.index > 0 and step.index % every == 0)

    def _metrics(self, line: str) -> None:
        if line[:1] not in ("S", "T", "M"):
            return  # the hot path: most lines are step lines or noise
        if self.progress.stage not in (None, nanochat_log.STAGE):
            return  # a later stage's figures (chat_sft's val bpb) are not the run's result
        found = nanochat_log.read([line])
        if found.val_bpb:
            self.progress.val_bpb = found.val_bpb[-1][1]
        if found.core:
            self.progress.core_metric = found.core[-1][1]
        if found.training_time_s is not None:
            self.progress.training_time_s = found.training_time_s
        if found.min_val_bpb is not None:
            self.progress.min_val_bpb = found.min_val_bpb
        if found.tokens is not None:
            self.progress.tokens = found.tokens
        if found.total_flops is not None:
            self.progress.total_flops = found.total_flops

    def run_stage(self, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
        """Run one stage, its output into the log and progress; (exit code, last output line)."""
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        lines: queue.Queue[str | None] = queue.Queue()
        tail: deque[str] = deque(maxlen=20)

        def pump() -> None:
            # Its own thread, so a slow checkpoint check or Volume commit never blocks the pipe
            # (a full pipe would stall training).
            assert proc.stdout is not None
            with open(self.log_path, "a", buffering=1) as log:
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    log.write(line + "\n")
                    lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                self.tick()
                continue
            if line is None:
                break
            if line.strip():
                tail.append(line.strip())
            self.tick(urgent=self.parse(line))
        code = proc.wait()
        reader.join()
        errors = [t for t in tail if re.search(r"error|exception|traceback", t, re.I) and not t.startswith("Traceback")]
        return code, (errors[-1] if errors else (tail[-1] if tail else ""))


def last_logged_step(log_path: Path, window: int = 1 << 20) -> int | None:
    """Steps done by the last training step an earlier attempt printed: how far it got past its
    checkpoint (its progress.json may lag, and a killed container writes nothing more)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, log_path.stat().st_size - window))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    return nanochat_log.read(text.splitlines()).last_done
