"""A worker's name: readable, unique, and free to take again after a restart.

RQ refuses to start a worker under a name whose registration has not lapsed (about a minute
after the last heartbeat), so a worker restarted at once under its old name, as a supervisor or
`docker compose restart` does, would crash. A registration left by a process of this machine
that is gone is the restarted worker's own: it is retired at once. One from another machine or
a live process is waited out, with a line saying so.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable

import redis
from rq import Worker

from speedq.connection import text
from speedq.errors import ProducerError


class NameTaken(ProducerError):
    """Another live worker holds the name."""


def process_name() -> str:
    """`host.pid`: this process, the same at every call."""
    return f"{socket.gethostname()}.{os.getpid()}"


def default_name() -> str:
    """`host.pid.xxxx`: the random suffix keeps apart containers that all run as PID 1, and a
    restart from taking a dead worker's name."""
    return f"{process_name()}.{secrets.token_hex(2)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_name(conn: redis.Redis, name: str, say: Callable[[str], None], poll_s: float = 1.0) -> None:
    """Make `name` one RQ will register; raises NameTaken if a live worker keeps it."""
    key = Worker.redis_worker_namespace_prefix + name
    said = False
    while True:
        death, host, pid = conn.hmget(key, "death", "hostname", "pid")
        if not conn.exists(key) or death is not None:
            return
        old_host, old_pid = text(host or b""), int(pid or 0)
        if old_host == socket.gethostname() and (old_pid == os.getpid() or not _alive(old_pid)):
            old = Worker.find_by_key(key, connection=conn)
            if old is not None:
                old.register_death()  # our own previous run, gone without saying so
            return
        if old_host == socket.gethostname():
            raise NameTaken(f"worker {name!r} is running here already (pid {old_pid}); give another --name")
        ttl = conn.ttl(key)
        if not said:
            say(f"a worker named {name!r} on {old_host} registered within the last minute; "
                f"waiting up to {ttl}s for it to lapse")
            said = True
        if ttl < 0:
            return
        time.sleep(poll_s)
        if conn.ttl(key) > ttl:  # renewed: that worker is alive
            raise NameTaken(f"worker {name!r} is running on {old_host}; give another --name")
