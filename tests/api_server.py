"""`speedq api` as a real process on a free port, for tests that talk HTTP to it."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.conftest import Speedq, free_port, wait_for


def start_api(speedq: Speedq) -> str:
    """Start `speedq api` against the test's Redis; returns its base URL once it answers.
    The process is stopped with the test's workers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "speedq", "api", "--port", str(port)],
        env=speedq.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    speedq.workers.append(server)
    base_url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base_url), timeout=30, what="speedq api to listen")
    return base_url


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/openapi.json").status_code == 200
    except httpx.HTTPError:
        return False
