"""A simulated nanochat: the same module names, flags, files and output lines as the real one,
in pure standard-library Python that runs on a CPU in seconds (see `nanochat/README.md`).

`SIM_TREE` is the source tree; `repo.ensure_sim_repo` commits it into a git repository so the
runner checks it out exactly as it would a clone of karpathy/nanochat.
"""

from pathlib import Path

SIM_TREE = Path(__file__).resolve().parent / "nanochat"
