"""A worker killed and started again at once under the same name just works, and default names
do not repeat (every container's worker is PID 1)."""

from __future__ import annotations

import re

from rq import Worker

from tests.conftest import RedisServer, Speedq, wait_for


def test_a_worker_restarted_under_its_name_within_rqs_ttl_starts_and_works(
    speedq: Speedq, redis_server: RedisServer
) -> None:
    conn = redis_server.client()
    first = speedq.start_worker("--name", "gpu-box-1")
    wait_for(lambda: Worker.find_by_key("rq:worker:gpu-box-1", connection=conn), what="the first worker to register")
    speedq.kill_worker(first)  # SIGKILL: no death registered, the name is held for about a minute
    assert conn.exists("rq:worker:gpu-box-1") and not conn.hexists("rq:worker:gpu-box-1", "death")

    again = speedq.start_worker("--name", "gpu-box-1")
    job = speedq.submit("--team", "a", "--smoke")
    record = speedq.wait_state(job, "succeeded", "failed", timeout=90)

    assert record["state"] == "succeeded", record["error"]
    assert record["attempts"][0]["worker"] == "gpu-box-1"
    assert again.poll() is None
    log = (speedq.home / "worker-1.log").read_text()
    assert "Traceback" not in log and "exists an active worker" not in log, log


def test_default_names_are_readable_and_do_not_repeat(speedq: Speedq, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    for _ in range(2):
        speedq.start_worker()
    names = wait_for(lambda: (found := [w.name for w in Worker.all(connection=conn)]) and len(found) == 2 and found,
                     what="two workers")
    assert len(set(names)) == 2
    for name in names:
        assert re.fullmatch(r"[\w.-]+\.\d+\.[0-9a-f]{4}", name), name
