"""Wall time of `speedq status JOB` (the installed console script, against a Redis holding the
job) against `python -c pass`, and whether `speedq status` imports `modal` (it must not: the
Modal SDK takes most of a second to import). Beside them, the floor of any status shown the
speedq way (a record validated by pydantic, printed by rich): one one-field model validated,
and rich's Console and Table imported, nothing else.
Prints figures; asserts nothing.

    python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import subprocess
import sys

from benchkit import SPEEDQ_CLI, Samples, bench, options, ratio, timed

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec

# One model with one constrained field, validated, and rich's Console and Table imported: the
# first constrained field is what pulls in the rest of pydantic (its types, annotated_types, the
# schema generator, the plugin lookup through importlib.metadata).
FLOOR = """
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table
class Job(BaseModel):
    id: str = Field(min_length=1)
Job(id="sq-1")
"""


def slowest_imports(env: dict[str, str], job_id: str) -> tuple[bool, list[tuple[int, str]]]:
    """From `python -X importtime`: was modal imported, and the slowest top-level imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "from speedq.entry import main; main()",
                           "status", job_id],
                          env=env, capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            _, cumulative, name = line.removeprefix("import time:").split("|")
            rows.append((int(cumulative), name.rstrip()[1:]))  # nested imports are indented further
    modal = any(name.strip().split(".")[0] == "modal" for _, name in rows)
    top = sorted((r for r in rows if not r[1].startswith(" ")), reverse=True)[:5]
    return modal, top


def main() -> None:
    args = options(__doc__, runs=10)

    with bench() as b:
        job_id = producer.submit(connect(b.redis.url), JobSpec(team="bench", backend="modal")).record.id

        def run(*command: str) -> None:
            subprocess.run(command, env=b.env, stdout=subprocess.DEVNULL, check=True)

        run(SPEEDQ_CLI, "status", job_id)  # warm the page cache for both
        # In turns (pass, status, pass, ...) so a burst of other work lands on both alike.
        commands = {
            "pass": (sys.executable, "-c", "pass"),
            "status": (SPEEDQ_CLI, "status", job_id),
            "floor": (sys.executable, "-c", FLOOR),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name] += timed(lambda command=command: run(*command), 1).seconds
        baseline, status, floor = (Samples(times[name]) for name in commands)
        modal, top = slowest_imports(b.env, job_id)

    print(f"python -c pass:      {baseline.ms()}")
    print(f"speedq status JOB:   {status.ms()}")
    print(f"floor (pydantic+rich): {floor.ms()}")
    print("slowest imports of speedq status: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top))
    print(f"modal imported by speedq status: {'YES (it must not be)' if modal else 'no'}")
    ratio("speedq status wall time (median)", status.median, baseline.median, "python -c pass")
    ratio("floor: one pydantic model + rich (median)", floor.median, baseline.median, "python -c pass")
    ratio("speedq status over that floor (median)", status.median, floor.median, "the floor")


if __name__ == "__main__":
    main()
