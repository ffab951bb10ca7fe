"""Wall time of `speedq status JOB` (the installed console script, against a Redis holding the
job) against `python -c pass`, and whether `speedq status` imports `modal` (it must not: the
Modal SDK takes most of a second to import). Prints figures; asserts nothing.

    python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import subprocess
import sys

from benchkit import SPEEDQ_CLI, bench, options, ratio, timed

from speedq import producer
from speedq.connection import connect
from speedq.schemas import JobSpec


def slowest_imports(env: dict[str, str], job_id: str) -> tuple[bool, list[tuple[int, str]]]:
    """From `python -X importtime`: was modal imported, and the slowest top-level imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "speedq.cli", "status", job_id],
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
        baseline = timed(lambda: run(sys.executable, "-c", "pass"), args.runs)
        status = timed(lambda: run(SPEEDQ_CLI, "status", job_id), args.runs)
        modal, top = slowest_imports(b.env, job_id)

    print(f"python -c pass:      {baseline.ms()}")
    print(f"speedq status JOB:   {status.ms()}")
    print("slowest imports of speedq status: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top))
    print(f"modal imported by speedq status: {'YES (it must not be)' if modal else 'no'}")
    ratio("speedq status wall time (median)", status.median, baseline.median, "python -c pass")


if __name__ == "__main__":
    main()
