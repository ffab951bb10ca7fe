"""The runner: the one place that knows nanochat (stages, flags, checkpoint layout, progress lines).

One call of `run(req)` is one attempt, inside `req.run_dir`, which is nanochat's NANOCHAT_BASE_DIR:
1. a force restart wipes the run dir, once per job id (Modal restarts a preempted input by itself);
2. the pinned nanochat commit is checked out once per commit under `req.cache_dir`;
3. the stages run in nanochat's order; a ledger records finished ones so none runs twice; the
   dataset and tokenizer stages run in the shared `req.data_dir` and are linked into the run;
4. base training always gets --save-every and resumes from the newest complete checkpoint;
5. all output is appended to the run's log and parsed into progress.json;
6. a result file is written when the attempt ends by itself (a killed runner writes nothing).

The local and sim backends start `python -m speedq.gpu.runner --request-json JSON` detached; the
Modal app calls `run` in-process. This module imports no Redis, RQ or Modal.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from speedq.gpu import data_files, fence, layout, nanochat

# Moved out to modules of their own, still reachable here: modal_app, offload and the tests use them.
from speedq.gpu.attempt import Attempt as Attempt
from speedq.gpu.attempt import last_logged_step as last_logged_step
from speedq.gpu.checkpoints import KEEP_CHECKPOINTS as KEEP_CHECKPOINTS
from speedq.gpu.checkpoints import _readable as _readable
from speedq.gpu.checkpoints import checkpoint_files as checkpoint_files
from speedq.gpu.checkpoints import checkpoint_steps as checkpoint_steps
from speedq.gpu.checkpoints import newest_complete_checkpoint as newest_complete_checkpoint
from speedq.gpu.checkpoints import prune_checkpoints as prune_checkpoints
from speedq.gpu.git import checkout as checkout
from speedq.gpu.git import resolve_commit as resolve_commit
from speedq.gpu.ledger import mark_done as mark_done
from speedq.gpu.ledger import read_ledger as read_ledger
from speedq.gpu.ledger import write_json_atomic as write_json_atomic
from speedq.gpu.plan import RANK_MODULE as RANK_MODULE
from speedq.gpu.plan import Stage as Stage
from speedq.gpu.plan import command as command
from speedq.gpu.plan import plan as plan
from speedq.gpu.plan import save_every_for as save_every_for
from speedq.gpu.plan import shards_needed as shards_needed
from speedq.gpu.plan import sizing as sizing
from speedq.gpu.plan import stage_env as stage_env
from speedq.gpu.plan import train_flags as train_flags
from speedq.schemas import Outcome, Progress, RunRequest, RunResult

# Runner behaviour
SHARED_DIRS = (nanochat.SHARDS_DIR, nanochat.TOKENIZER_DIR)  # live in req.data_dir, linked into every run


# ---------------------------------------------------------------------------------------------
# Files


def force_restart(req: RunRequest) -> bool:
    """Wipe the run dir for a force restart, once per job id. True if it wiped."""
    run_dir = Path(req.run_dir)
    marker = run_dir / layout.FORCE_MARKER
    if not req.force_restart:
        return False
    try:
        if marker.read_text().strip() == req.job_id:
            return False  # this job already wiped it; this is a restart of the same job
    except OSError:
        pass
    if run_dir.exists():
        for entry in run_dir.iterdir():
            if layout.kept_by_force_restart(entry.name):
                continue  # the claim this attempt just made stays, and the preflight that passed
            # Links to the shared data are unlinked, never followed.
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, req.job_id + "\n")
    return True


def link_shared_data(req: RunRequest) -> None:
    """Shards and tokenizer live in req.data_dir; the run dir gets links to them."""
    run_dir, data_dir = Path(req.run_dir), Path(req.data_dir)
    for name in SHARED_DIRS:
        target, link = data_dir / name, run_dir / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.exists() and not link.is_symlink():
            continue  # a run dir from the old script with its own copy: use it
        link.unlink(missing_ok=True)
        try:
            link.symlink_to(target, target_is_directory=True)
        except OSError:  # a filesystem without symlinks: copy (the tokenizer is small)
            shutil.copytree(target, link, dirs_exist_ok=True)


@contextmanager
def data_lock(data_dir: Path) -> Iterator[None]:
    """Runs sharing a data dir take turns preparing it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / layout.DATA_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def shared_stage_done(req: RunRequest, stage: Stage) -> bool:
    """Data and tokenizer are done when their files are there and readable, never because a
    stage exited 0 (nanochat.dataset does even when every download failed)."""
    data_dir = Path(req.data_dir)
    if stage.name == "data":
        return not data_files.missing_shards(data_dir, shards_needed(req))
    if stage.name == "tok_train":
        return data_files.tokenizer_ready(data_dir)
    return stage.name in read_ledger(data_dir / layout.DATA_LEDGER)


def stage_left_undone(req: RunRequest, stage: Stage) -> str | None:
    """After a stage exited 0: what it should have made but did not, in one line."""
    data_dir = Path(req.data_dir)
    if stage.name == "data":
        missing = data_files.missing_shards(data_dir, shards_needed(req))
        if missing:
            names = ", ".join(nanochat.shard_name(i) for i in missing[:3]) + (" ..." if len(missing) > 3 else "")
            return (f"{len(missing)} of {shards_needed(req) + 1} shards missing or unreadable in "
                    f"{data_dir / nanochat.SHARDS_DIR} ({names})")
    if stage.name == "tok_train" and not data_files.tokenizer_ready(data_dir):
        return f"no {' and '.join(nanochat.TOKENIZER_FILES)} in {data_dir / nanochat.TOKENIZER_DIR}"
    return None


def offline_skip(req: RunRequest, stage: Stage) -> str | None:
    """Why an offline run skips this stage, or None to run it."""
    if not req.offline or stage.name not in nanochat.NEEDS_INTERNET or stage.name == "data":
        return None  # the data stage is skipped only when its shards are there (shared_stage_done)
    return f"skipped, offline run (it {nanochat.NEEDS_INTERNET[stage.name]})"


# ---------------------------------------------------------------------------------------------
# One attempt


def _stage_key(req: RunRequest, stage: Stage) -> str:
    return stage.name if stage.shared else f"{req.mode}/{stage.name}"


def _run_shared_stages(
    attempt: Attempt, req: RunRequest, stages: list[Stage], tree: Path
) -> tuple[Stage, int | None, str] | None:
    """Data and tokenizer into req.data_dir, once for every run using it. A failure or None."""
    data_dir = Path(req.data_dir)
    ledger = data_dir / layout.DATA_LEDGER
    with data_lock(data_dir):
        for stage in stages:
            if shared_stage_done(req, stage):
                attempt.log(f"---- stage {stage.name}: already done in {data_dir}, skipped ----")
                continue
            if stage.name == "data" and req.offline:
                undone = stage_left_undone(req, stage)
                return stage, None, f"offline run, and {undone}; downloading them needs the internet"
            if (why := offline_skip(req, stage)) is not None:
                attempt.log(f"---- stage {stage.name}: {why} ----")
                continue
            argv = command(req, stage, [])
            attempt.progress.stage = stage.name
            attempt.write_progress(force=True)
            attempt.log(f"---- stage {stage.name}: {' '.join(argv)} (in {data_dir}) ----")
            code, last = attempt.run_stage(argv, tree, stage_env(req, data_dir))
            if code != 0:
                return stage, code, last
            if (undone := stage_left_undone(req, stage)) is not None:
                return stage, code, f"exited 0 but {undone}"
            shards = shards_needed(req) if stage.name == "data" else None
            mark_done(ledger, stage.name, commit=req.commit, shards=shards)
    return None


def _failure(stage: Stage, code: int | None, last: str) -> str:
    if code is None or code == 0:
        return f"stage {stage.name}: {last}"
    return f"stage {stage.name} exited with code {code}: {last}"


def prepare_data(req: RunRequest) -> None:
    """The dataset and tokenizer stages alone, into req.data_dir (Modal runs this on a CPU)."""
    tree = checkout(req)
    data_dir = Path(req.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(req=req, log_path=data_dir / layout.DATA_LOG)
    attempt.log(f"==== speedq prepare_data for {req.job_id} | nanochat {req.commit} | {time.ctime()} ====")
    failed = _run_shared_stages(attempt, req, [s for s in plan(req) if s.shared], tree)
    if failed:
        raise RuntimeError(_failure(*failed))


def run(req: RunRequest, on_checkpoint: Callable[[], None] | None = None, call_id: str | None = None) -> RunResult:
    """One attempt of `req`, start to end, in-process. Returns (and writes) its RunResult.

    First the run-dir fence (speedq.gpu.fence): announce `call_id` (a local runner names itself
    by its handle), claim the run dir for req.attempt, wait until no older attempt's training
    processes hold it. A superseded attempt returns `fenced` and writes nothing more.

    A fault of the runner itself (a full disk, say) still ends in a crashed result naming it,
    not in a silent exit the worker would take for a preemption and retry as if nothing was wrong.
    """
    try:
        fence.announce(req.run_dir, req.attempt, call_id)
        fence.claim(req.run_dir, req.attempt, call_id)
        fence.take_training_lock(req.run_dir)
        return _attempt(req, fence.guarded(req.run_dir, req.attempt, on_checkpoint))
    except fence.Fenced as exc:
        return RunResult(job_id=req.job_id, attempt=req.attempt, outcome=Outcome.fenced, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported in the result, which is the runner's job
        run_dir = Path(req.run_dir)
        error = f"runner error: {type(exc).__name__}: {exc}".replace("\n", " ")
        result = RunResult(job_id=req.job_id, attempt=req.attempt, outcome=Outcome.crashed, error=error)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / layout.LOG, "a") as log:
                log.write(f"==== attempt {req.attempt} crashed: {error} ====\n")
            write_json_atomic(run_dir / layout.result_name(req.attempt), result.model_dump_json(indent=2))
        except OSError:
            pass  # nowhere to write: the caller still gets the result
        return result


def preflight_words(req: RunRequest) -> str:
    return f" preflight ({req.preflight_steps} steps, evals off)" if req.preflight_steps else ""


def _planned(req: RunRequest) -> list[Stage] | str:
    """The plan, or why nanochat would refuse the spec (a run whose tokenizer changes the batch)."""
    try:
        return plan(req)
    except nanochat.SizingError as exc:
        return f"nanochat would refuse this spec: {exc}"


def _attempt(req: RunRequest, on_checkpoint: Callable[[], None] | None) -> RunResult:
    run_dir = Path(req.run_dir)
    force_restart(req)
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(req=req, log_path=run_dir / layout.LOG, on_checkpoint=on_checkpoint,
                      progress_path=run_dir / layout.PROGRESS)
    ledger_path = run_dir / layout.LEDGER
    ckpt_dir = run_dir / layout.checkpoint_dir(req.model, req.mode)
    try:  # carry the last attempt's step/total/loss: a resume past base_train still shows them
        previous = Progress.model_validate_json((run_dir / layout.PROGRESS).read_text())
        attempt.progress = previous.model_copy(update={"resumed_from_step": None, "eta_s": None})
    except (OSError, ValueError):
        pass
    attempt.progress.checkpoint_step = newest_complete_checkpoint(ckpt_dir, req.nproc)
    resumed_from: int | None = None
    attempt.log(
        f"==== speedq attempt {req.attempt} of {req.job_id} | {time.strftime('%Y-%m-%d %H:%M:%S')} | "
        f"{req.model} {req.mode}{preflight_words(req)} on {req.gpu_type}:{req.nproc} ({req.launcher}) | "
        f"nanochat {req.commit} ===="
    )

    def finish(outcome: Outcome, exit_code: int | None = None, error: str | None = None) -> RunResult:
        attempt.scan_checkpoints(force=True)
        if outcome is Outcome.succeeded:
            attempt.progress.stage = "done"
            attempt.progress.eta_s = 0.0
        attempt.write_progress(force=True)
        step = attempt.progress.step
        result = RunResult(
            job_id=req.job_id, attempt=req.attempt, outcome=outcome, exit_code=exit_code, error=error,
            resumed_from_step=resumed_from, final_step=step if step is not None else attempt.progress.checkpoint_step,
        )
        attempt.log(f"==== attempt {req.attempt} {outcome.value}{': ' + error if error else ''} ====")
        write_json_atomic(run_dir / layout.result_name(req.attempt), result.model_dump_json(indent=2))
        return result

    try:
        tree = checkout(req)
    except Exception as exc:  # noqa: BLE001 - a bad commit or unreachable repo ends the attempt
        return finish(Outcome.crashed, None, f"stage checkout failed: {exc}")
    fence.check(run_dir, req.attempt)
    stages = _planned(req)
    if isinstance(stages, str):
        return finish(Outcome.crashed, None, stages)
    done = read_ledger(ledger_path)
    pending_shared = [s for s in stages if s.shared and _stage_key(req, s) not in done]
    for stage in stages:
        if stage.shared and _stage_key(req, stage) in done:
            attempt.log(f"---- stage {stage.name}: done in an earlier attempt (ledger), skipped ----")
    if pending_shared:
        failed = _run_shared_stages(attempt, req, pending_shared, tree)
        if failed:
            return finish(Outcome.crashed, failed[1], _failure(*failed))
        for stage in pending_shared:
            mark_done(ledger_path, _stage_key(req, stage), attempt=req.attempt, commit=req.commit)
        attempt.callback()
    link_shared_data(req)
    stages = _planned(req)  # again: the tokenizer exists now, and its vocabulary sizes the batch
    if isinstance(stages, str):
        return finish(Outcome.crashed, None, stages)

    for stage in (s for s in stages if not s.shared):
        key = _stage_key(req, stage)
        if key in done:
            attempt.log(f"---- stage {stage.name}: done in an earlier attempt (ledger), skipped ----")
            if stage.name == "base_train":
                resumed_from = attempt.progress.checkpoint_step
                attempt.progress.step = resumed_from
            continue
        if (why := offline_skip(req, stage)) is not None:
            attempt.log(f"---- stage {stage.name}: {why} ----")
            continue
        fence.check(run_dir, req.attempt)
        extra: list[str] = []
        if stage.name == "base_train":
            attempt.ckpt_dir, attempt.save_every = ckpt_dir, save_every_for(req)
            extra.append(f"--save-every={attempt.save_every}")
            resume = newest_complete_checkpoint(ckpt_dir, req.nproc)
            reached = last_logged_step(attempt.log_path)
            if resume is not None:
                extra.append(f"--resume-from-step={resume}")
                resumed_from = resume
                attempt.log(f"---- resuming base_train from step {resume} (newest complete checkpoint) ----")
            attempt.progress = attempt.progress.model_copy(
                update={"step": resume or 0, "total": None, "loss": None, "eta_s": None, "resumed_from_step": resume,
                        "reached_before_resume": reached}
            )
        argv = command(req, stage, extra)
        attempt.progress.stage = stage.name
        attempt.write_progress(force=True)
        attempt.log(f"---- stage {stage.name}: {' '.join(argv)} ----")
        code, last = attempt.run_stage(argv, tree, stage_env(req, run_dir))
        if stage.name == "base_train":
            attempt.scan_checkpoints(force=True)
            attempt.ckpt_dir = None
        if code != 0:
            fence.check(run_dir, req.attempt)  # a superseded stage exits non-zero: not a crash
            how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            return finish(Outcome.crashed, code, f"stage {stage.name} {how}: {last}".rstrip(": "))
        mark_done(ledger_path, key, attempt=req.attempt, commit=req.commit)
        attempt.callback()
    return finish(Outcome.succeeded, 0)


# ---------------------------------------------------------------------------------------------
# Command line: the local and sim backends start this detached, in its own session.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speedq.gpu.runner", description="Run one speedq attempt.")
    parser.add_argument("--request-json", required=True, help="a RunRequest as JSON")
    args = parser.parse_args(argv)
    req = RunRequest.model_validate_json(args.request_json)
    run_dir = Path(req.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / layout.PID, f"{os.getpid()}\n")
    result = run(req)
    print(f"attempt {req.attempt} of {req.job_id}: {result.outcome.value}{': ' + result.error if result.error else ''}")
    return 0 if result.outcome is Outcome.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
