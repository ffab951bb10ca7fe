"""One training process: `python -m speedq.gpu.rank MODULE ARGS...` runs nanochat's MODULE
(torchrun starts one per rank) inside the run-directory fence.

Before the training runs it takes the run dir's training lock shared (a newer attempt cannot
start its own training while this process lives) and checks that its attempt still holds the
claim. While it trains, a thread checks the claim every second and every checkpoint save checks
it first: a superseded process exits with FENCED_EXIT without writing. The run dir and attempt
come from the environment the runner set (proctree.MARK_ENV, proctree.ATTEMPT_ENV).
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from speedq.gpu import fence
from speedq.gpu.proctree import ATTEMPT_ENV, MARK_ENV

P = ParamSpec("P")
R = TypeVar("R")

# Where nanochat saves a checkpoint: the real one's checkpoint_manager, the sim's common module.
SAVE_FUNCTIONS = (("nanochat.checkpoint_manager", "save_checkpoint"), ("nanochat.common", "save_checkpoint"))


def _stop(reason: str) -> None:
    print(f"speedq fence: {reason}", file=sys.stderr, flush=True)
    os._exit(fence.FENCED_EXIT)  # no cleanup handlers: nothing more may reach the run dir


def _checked(run_dir: str, attempt: int, save: Callable[P, R]) -> Callable[P, R]:
    def save_if_still_ours(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            fence.check(run_dir, attempt)
        except fence.Fenced as exc:
            _stop(str(exc))
        return save(*args, **kwargs)

    return save_if_still_ours


def _guard_saves(run_dir: str, attempt: int) -> None:
    for module_name, name in SAVE_FUNCTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        save = getattr(module, name, None)
        if save is not None:
            setattr(module, name, _checked(run_dir, attempt, save))


def _watch_claim(run_dir: str, attempt: int) -> None:
    stop = threading.Event()
    while not stop.wait(fence.RANK_CHECK_EVERY_S):
        try:
            fence.check(run_dir, attempt)
        except fence.Fenced as exc:
            _stop(str(exc))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m speedq.gpu.rank MODULE [ARGS...]")
    run_dir, attempt = os.environ.get(MARK_ENV), os.environ.get(ATTEMPT_ENV)
    if run_dir and attempt and attempt.isdigit():
        fence.hold_training_lock(run_dir)
        try:
            fence.check(run_dir, int(attempt))
        except fence.Fenced as exc:
            _stop(str(exc))
        threading.Thread(target=_watch_claim, args=(run_dir, int(attempt)), daemon=True).start()
        _guard_saves(run_dir, int(attempt))
    module, *args = argv
    if args[:1] == ["--"]:
        args = args[1:]  # torchrun's separator before the module's own flags, not one of them
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
