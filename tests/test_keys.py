"""Key names and id formats live in speedq/keys.py only."""

from __future__ import annotations

import re
from pathlib import Path

from speedq import keys
from speedq.schemas import JobRef

PACKAGE = Path(__file__).resolve().parent.parent / "speedq"


def test_job_ids_round_trip_through_validation() -> None:
    assert JobRef(id=keys.job_id(42)).id == "sq-42"


def test_each_hand_over_to_rq_gets_a_fresh_rq_id() -> None:
    first = keys.rq_job_id("sq-7", None)
    second = keys.rq_job_id("sq-7", first)
    third = keys.rq_job_id("sq-7", second)
    assert [first, second, third] == ["sq-7", "sq-7-1", "sq-7-2"]


def test_no_other_module_builds_a_key_queue_name_or_id() -> None:
    built = re.compile(r"""["'](speedq:|speedq-(notify|modal|local|sim|\{)|sq-)|\{PREFIX\}|\{QUEUE_PREFIX\}""")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("keys.py",) or rel.startswith("sim/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if built.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
