"""A stand-in for torchrun where the sim plays every rank in one process:
`python -m speedq.sim.torchrun -m MODULE ARGS...`.

It keeps the one trait of the real torchrun that bites a supervisor: the training starts in a
session of its own (torch.distributed.elastic starts its workers with setsid), so killing the
runner's process group leaves the training running. Like torchrun, it passes SIGTERM and SIGINT
on to the training, and exits 1 when the training fails (torchrun's ChildFailedError), whatever
the training's own code or signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "-m":
        sys.exit("usage: python -m speedq.sim.torchrun -m MODULE [ARGS...]")
    child = subprocess.Popen([sys.executable, *argv], start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
