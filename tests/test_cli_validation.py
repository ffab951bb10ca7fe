"""Every schema rule, broken through the CLI: exit 2, one line naming the field, Redis untouched."""

from __future__ import annotations

import pytest

from tests.conftest import Speedq


def snapshot(client) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    return {key: client.dump(key) for key in client.keys("*")}


BAD_SUBMITS = [
    (["--team", "Alpha"], "team"),
    (["--team", "-alpha"], "team"),
    (["--team", "a" * 64], "team"),
    (["--team", "a/../b"], "team"),
    (["--team", "ok", "--model", "d1"], "model"),
    (["--team", "ok", "--model", "d65"], "model"),
    (["--team", "ok", "--model", "gpt2"], "model"),
    (["--team", "ok", "--repo-ref", "a..b"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "-x"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "has space"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "bad~1"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "a:b"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "tab\there"], "repo-ref"),
    (["--team", "ok", "--repo-ref", "x" * 201], "repo-ref"),
    (["--team", "ok", "--repo-ref", "$(touch /tmp/pwned)"], "repo-ref"),
    (["--team", "ok", "--gpu", "V100"], "gpu"),
    (["--team", "ok", "--gpu", "H100:0"], "gpu"),
    (["--team", "ok", "--gpu", "H100:9"], "gpu"),
    (["--team", "ok", "--gpu", "H100:x"], "gpu"),
    (["--team", "ok", "--gpu", "H100:"], "gpu"),
    (["--team", "ok", "--gpu", "H100:" + "9" * 5000], "whole number from 1 to 8"),
    (["--team", "ok", "--run-name", "../escape"], "run-name"),
    (["--team", "ok", "--run-name", "Has Caps"], "run-name"),
    (["--team", "ok", "--priority", "urgent"], "priority"),
    (["--team", "ok", "--backend", "aws"], "backend"),
    (["--team", "ok", "--max-attempts", "0"], "max-attempts"),
    (["--team", "ok", "--max-attempts", "11"], "max-attempts"),
    (["--team", "ok", "--max-attempts", "many"], "max-attempts"),
    (["--team", "ok", "--timeout", "25h"], "timeout"),
    (["--team", "ok", "--timeout", "soon"], "timeout"),
    (["--team", "ok", "--timeout", "0"], "timeout"),
    (["--team", "ok", "--save-every", "0"], "save-every"),
    (["--bogus-flag"], "bogus-flag"),
    (["--team", "ok", "--train-arg", "depth=4"], "depth is set by speedq"),
    (["--team", "ok", "--train-arg", "resume-from-step=3"], "resume-from-step"),
    (["--team", "ok", "--smoke", "--train-arg", "num-iterations=3"], "num-iterations"),
    (["--team", "ok", "--train-arg", "bogus=1"], "not a base_train option"),
    (["--team", "ok", "--train-arg", "max-seq-len=1;touch /tmp/pwned"], "max-seq-len"),
    (["--team", "ok", "--train-arg", "window-pattern=$(id)"], "window-pattern"),
    (["--team", "ok", "--train-arg", "=3"], "train arg"),
    (["--team", "ok", "--gpu", "H100:3"], "multiple of device-batch-size"),
    (["--team", "ok", "--gpu", "H100:8", "--train-arg", "device-batch-size=5"], "multiple of device-batch-size"),
    (["--team", "ok", "--gpu", "CPU:1"], "CPU runs only on the local or sim backend"),
    (["--team", "ok", "--backend", "local", "--gpu", "CPU:2"], "CPU:1"),
    (["--team", "ok", "--backend", "local", "--gpu", "CPU:1", "--train-arg", "fp8"], "fp8"),
]


@pytest.mark.parametrize(("args", "field"), BAD_SUBMITS, ids=[" ".join(a)[:40] for a, _ in BAD_SUBMITS])
def test_bad_submit_is_one_line_exit_2_and_stores_nothing(speedq: Speedq, redis_server, args, field) -> None:
    client = redis_server.client()
    speedq.submit("--team", "existing")  # something already stored, which must survive
    before = snapshot(client)

    done = speedq.run("submit", *args)

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert field in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert snapshot(client) == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["status", "sq-1; rm -rf /"], "id"),
        (["status", "../../etc/passwd"], "id"),
        (["ls", "--state", "exploded"], "state"),
        (["ls", "--limit", "0"], "limit"),
        (["ls", "--team", "NOPE"], "team"),
        (["logs", "sq-1", "--tail", "-3"], "tail"),
        (["cancel", "sq-1", "--team", "BAD TEAM"], "team"),
        (["worker", "--backend", "aws"], "backends"),
    ],
)
def test_other_commands_validate_too(speedq: Speedq, redis_server, args, field) -> None:
    speedq.submit("--team", "existing")
    before = snapshot(redis_server.client())
    done = speedq.run(*args)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert field in done.stderr
    assert snapshot(redis_server.client()) == before


@pytest.mark.parametrize(
    "args",
    [["status", "sq-999"], ["logs", "sq-999"], ["cancel", "sq-999", "--team", "a"], ["retry", "sq-999", "--team", "a"]],
)
def test_unknown_job_is_a_clear_error_exit_2(speedq: Speedq, args: list[str]) -> None:
    done = speedq.run(*args)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no job sq-999"


def test_unreachable_redis_is_one_line(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = speedq.run("ls")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot reach Redis" in done.stderr
