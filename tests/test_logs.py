"""`speedq logs` reads the log the record points at (not a path rebuilt from the reader's own
settings), and `--follow` keeps a read offset."""

from __future__ import annotations

import subprocess
import sys

from speedq.logs import Follower
from speedq.schemas import JobRecord, JobSpec, LogPointer
from tests.conftest import Speedq, wait_for


def test_logs_from_another_home_read_the_records_log(speedq: Speedq, tmp_path) -> None:  # type: ignore[no-untyped-def]
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--smoke")
    assert speedq.wait_state(job, "succeeded", "failed", timeout=60)["state"] == "succeeded"

    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    speedq.env["SPEEDQ_HOME"] = str(elsewhere)  # a reader whose own runs directory is empty
    log = speedq.run("logs", job, check=True).stdout
    assert "step 00009/00010" in log  # nanochat counts steps from 0
    assert speedq.run("logs", job, "--tail", "1", check=True).stdout.count("\n") == 1


def test_follow_prints_each_line_once_until_the_job_ends(speedq: Speedq, tmp_path) -> None:  # type: ignore[no-untyped-def]
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.3"  # a few seconds of training to follow
    speedq.start_worker()
    job = speedq.submit("--team", "alpha", "--smoke")
    wait_for(lambda: speedq.status(job)["log"] is not None, timeout=60, what="the run's log")
    reader_env = {**speedq.env, "SPEEDQ_HOME": str(tmp_path / "reader")}
    follow = subprocess.run([sys.executable, "-m", "speedq", "logs", job, "--follow"],
                            env=reader_env, capture_output=True, text=True, timeout=240)
    assert follow.returncode == 0, follow.stderr
    whole = speedq.run("logs", job, check=True).stdout
    assert follow.stdout == whole  # every line, each once, in order
    assert "step" in whole
    assert f"job {job} succeeded" in follow.stderr


def _record(path: str) -> JobRecord:
    pointer = LogPointer(location="local", path=path, command=f"tail -f {path}")
    return JobRecord(id="sq-1", spec=JobSpec(team="a"), log=pointer)


def test_follower_reads_only_what_was_appended(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "log.txt"
    record = _record(str(log))
    follower = Follower()
    assert follower.new(record) == ""  # no file yet
    log.write_bytes(b"one\n")
    assert follower.new(record) == "one\n"
    with open(log, "ab") as fh:
        fh.write(b"two \xc3")  # half of a two-byte character
    assert follower.new(record) == "two "
    assert follower.offset == log.stat().st_size
    with open(log, "ab") as fh:
        fh.write(b"\xa9\n")
    assert follower.new(record) == "\u00e9\n"
    assert follower.new(record) == ""
    log.write_bytes(b"fresh\n")  # the run directory was wiped and the log begun again
    assert follower.new(record) == "fresh\n"
