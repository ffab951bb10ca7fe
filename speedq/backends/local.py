"""The local backend: the runner in a detached process on this machine.

Like a Modal call, the runner outlives the worker that started it (its own session), so a
worker killed with SIGKILL leaves it running and another worker reattaches by its handle.
The handle (the attempt's call id) is `<pid>@<process start time>:<run dir>`; the start time
tells a live runner from an unrelated process that got the same pid later.

The backend owns the attempt's whole process tree: torchrun starts the training in sessions of
its own, so the tree is found by the run dir's mark in each process's environment
(speedq.gpu.proctree), and cancelling, reaping or relaunching ends all of it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from speedq import config, settings
from speedq.backends.base import BackendError, CallStatus, for_attempt
from speedq.gpu import fence, layout, proctree
from speedq.gpu.proctree import start_ticks
from speedq.schemas import JobRecord, LogPointer, Outcome, Progress, RunRequest, RunResult
from speedq.schemas import repo as repos

# How the runner starts training (RunRequest.launcher's values; mypy checks the two agree).
Launcher = Literal["torchrun", "python", "sim"]
CANCEL_GRACE_S = 5.0
STRAYS_WAIT_S = 10.0  # SIGKILLed processes are gone within this; longer means an unkillable one


class StrayProcesses(BackendError):
    """Processes of an earlier attempt would not end; no new attempt may start beside them."""


def end_strays(run_dir: Path, up_to_attempt: int | None = None) -> None:
    """SIGKILL what is left of attempts up to `up_to_attempt` (all, if None) and wait for it."""
    left = proctree.end_marked(run_dir, up_to_attempt, wait_s=STRAYS_WAIT_S)
    if left:
        raise StrayProcesses(f"processes {left} of an earlier attempt in {run_dir} did not end after SIGKILL")


def tail_lines(path: Path, count: int | None) -> str:
    """The last `count` lines of a file without reading all of a multi-GB log."""
    try:
        with open(path, "rb") as fh:
            if count is None:
                return fh.read().decode(errors="replace")
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            block, data = 64 * 1024, b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                fh.seek(start)
                data = fh.read(end - start) + data
                end = start
    except FileNotFoundError:
        return ""
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(lines[-count:]) if count else ""


class LocalBackend:
    name = "local"
    prepares_data = False  # the runner prepares the shared data itself, under a local flock

    def __init__(
        self,
        repo: str | None = None,
        runs_root: Path | None = None,
        data_root: Path | None = None,
        cache_root: Path | None = None,
    ) -> None:
        # Where karpathy's repository is fetched from (a mirror or checkout, if set); a fork's
        # URL is fetched as it is.
        self.repo = repo or settings.get().nanochat_repo or config.NANOCHAT_REPO_URL
        self.runs_root = runs_root or settings.get().runs_root()
        self.data_root = data_root or settings.get().data_root()
        self.cache_root = cache_root or settings.get().cache_root()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def launcher(self) -> Launcher:
        return "torchrun" if shutil.which("torchrun") else "python"

    def check(self) -> None:
        if shutil.which("git") is None:
            raise BackendError(f"the {self.name} backend needs git on PATH")

    def source(self, repo: str) -> str:
        """What git fetches for a job's repository."""
        return self.repo if repos.is_default(repo) else repo

    def resolve_ref(self, ref: str, repo: str = config.NANOCHAT_REPO_URL) -> str:
        from speedq.gpu.runner import resolve_commit

        source = self.source(repo)
        try:
            return resolve_commit(source, ref)
        except Exception as exc:  # noqa: BLE001 - any git failure is the user's ref or repo
            raise BackendError(f"cannot resolve nanochat ref {ref!r} in {source}: {exc}") from None

    def run_dir(self, record: JobRecord) -> str:
        return str(self.runs_root / layout.run_relpath(record.spec.team, record.spec.run_name or ""))

    def attempt_dir(self, record: JobRecord, attempt: int | None = None) -> Path:
        """The run dir of `attempt` (default: the current one): a preflight's is its own."""
        run = Path(self.run_dir(record))
        return run / layout.PREFLIGHT_DIR if record.is_preflight(attempt) else run

    def request(self, record: JobRecord, attempt: int) -> RunRequest:
        return for_attempt(record, attempt, self.run_request(record, attempt))

    def run_request(self, record: JobRecord, attempt: int) -> RunRequest:
        """The job's own run (not its preflight)."""
        spec = record.spec
        return RunRequest(
            job_id=record.id,
            attempt=attempt,
            model=spec.model,
            mode=spec.mode,
            nproc=spec.gpu.count,
            gpu_type=spec.gpu.type,
            commit=record.nanochat_commit or spec.repo_ref,
            repo=self.source(spec.repo),
            run_dir=self.run_dir(record),
            data_dir=str(self.data_root),
            cache_dir=str(self.cache_root),
            launcher=self.launcher,
            save_every=spec.save_every,
            force_restart=spec.force_restart,
            train_args=dict(spec.train_args),
            offline=settings.get().offline,
        )

    def prepare(self, record: JobRecord) -> None:
        """Nothing: the runner prepares the shared data itself, under a local flock."""

    def announced(self, record: JobRecord, attempt: int) -> str | None:
        note = fence.read_announcement(self.attempt_dir(record, attempt), attempt)
        return note.call_id if note is not None else None

    def launch(self, record: JobRecord, attempt: int) -> str:
        req = self.request(record, attempt)
        run_dir = Path(req.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # The supervisor launches only once the previous attempt has ended; anything of it still
        # alive here (a stage that ignored SIGTERM, say) ends now, before a second could start.
        end_strays(run_dir)
        # The runner's own stderr (an import error, say) lands outside the run dir, which a
        # force restart wipes.
        errors = self.cache_root / "runner-output" / f"{record.id}-{attempt}.txt"
        errors.parent.mkdir(parents=True, exist_ok=True)
        with open(errors, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "speedq.gpu.runner", "--request-json", req.model_dump_json()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the worker, as a Modal call does
                cwd=run_dir,
                env={**os.environ, proctree.MARK_ENV: str(run_dir), proctree.ATTEMPT_ENV: str(attempt)},
            )
        self._children[proc.pid] = proc
        return fence.local_handle(proc.pid, run_dir)

    @staticmethod
    def parse_call_id(call_id: str) -> tuple[int, int | None, Path]:
        handle, _, run_dir = call_id.partition(":")
        pid, _, ticks = handle.partition("@")
        return int(pid), int(ticks) if ticks.isdigit() else None, Path(run_dir)

    def _alive(self, pid: int, ticks: int | None) -> bool:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False  # our own child, now reaped
        now = start_ticks(pid)
        return now is not None and (ticks is None or now == ticks)

    def _result(self, run_dir: Path, attempt: int) -> RunResult | None:
        path = run_dir / layout.result_name(attempt)
        try:
            return RunResult.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            error = f"unreadable result file: {exc}"
            return RunResult(job_id="", attempt=attempt, outcome=Outcome.crashed, error=error)

    def poll(self, record: JobRecord, call_id: str) -> CallStatus:
        pid, ticks, run_dir = self.parse_call_id(call_id)
        attempt = self._attempt_of(record, call_id)
        result = self._result(run_dir, attempt)
        if result is None and not self._alive(pid, ticks):
            result = self._result(run_dir, attempt)  # it may have written just before exiting
            if result is None:
                end_strays(run_dir, attempt)  # a killed runner's training lives on in its own session
                return CallStatus(Outcome.preempted, "the runner process ended without a result (killed)")
        if result is None:
            return CallStatus()
        if not self._alive(pid, ticks):
            end_strays(run_dir, attempt)  # the attempt has ended only when all of it has
        return CallStatus(result.outcome, result.error, result)

    @staticmethod
    def _attempt_of(record: JobRecord, call_id: str) -> int:
        for attempt in reversed(record.attempts):
            if attempt.call_id == call_id:
                return attempt.number
        return len(record.attempts)

    def cancel(self, call_id: str) -> None:
        """The runner first (SIGTERM lets it pass the signal on to its stage), then every process
        left with the run dir's mark: torchrun's ranks do not share the runner's session."""
        pid, ticks, run_dir = self.parse_call_id(call_id)
        for sig, wait in ((signal.SIGTERM, CANCEL_GRACE_S), (signal.SIGKILL, 2.0)):
            if not self._alive(pid, ticks):
                break
            try:
                os.killpg(pid, sig)  # the runner leads its session: its stages go with it
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._alive(pid, ticks):
                time.sleep(0.05)
        end_strays(run_dir, fence.attempt_announcing(run_dir, call_id))

    def read_progress(self, record: JobRecord) -> Progress | None:
        path = self.attempt_dir(record) / layout.PROGRESS
        try:
            return Progress.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None

    def read_log(self, record: JobRecord, tail: int | None = None) -> str:
        return tail_lines(self.attempt_dir(record) / layout.LOG, tail)

    def log_pointer(self, record: JobRecord) -> LogPointer:
        path = self.attempt_dir(record) / layout.LOG
        return LogPointer(location="local", path=str(path), command=f"tail -f {shlex.quote(str(path))}")
