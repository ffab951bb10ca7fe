"""The real tier's process watcher (tests/real/processes.py) counts trainings as a user would:
a training's child caught between fork and exec is not a second training."""

from __future__ import annotations

from tests.real.processes import Proc, training_pids

TRAIN = ("/venv/bin/python", "-u", "-m", "speedq.gpu.rank", "scripts.base_train", "--", "--depth=2")
TORCHRUN = ("/venv/bin/python", "/venv/bin/torchrun", "--standalone", "-m", "speedq.gpu.rank", "scripts.base_train")


def test_a_trainings_child_before_its_exec_is_not_a_second_training() -> None:
    # As sampled in a failed run: torch.compile's probe, forked by the rank, not yet exec'd.
    procs = [Proc(100, TORCHRUN, "/run", 90, 90), Proc(101, TRAIN, "/run", 100, 101),
             Proc(150, TRAIN, "/run", 101, 101)]
    assert training_pids(procs) == (101,)


def test_two_ranks_of_two_launchers_are_two_trainings() -> None:
    procs = [Proc(100, TORCHRUN, "/run", 90, 90), Proc(101, TRAIN, "/run", 100, 101),
             Proc(200, TORCHRUN, "/run", 190, 190), Proc(201, TRAIN, "/run", 200, 201)]
    assert training_pids(procs) == (101, 201)
