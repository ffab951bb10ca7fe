"""A one-connection Redis reader for the CLI's single-key reads (`speedq status`).

redis-py costs `speedq status` more than everything else together: `import redis` alone is
about 5x `python -c pass` here (it imports `redis.asyncio`, asyncio and, where installed,
opentelemetry), for one GET. This module speaks the few RESP2 commands such a read needs over a
plain socket. It only ever takes the happy path: any URL form it does not know (TLS, options),
any connection failure or error reply returns None, and the caller goes the ordinary way,
through redis-py, whose retries and error lines stay the one account of what went wrong.
Everything that writes goes through redis-py, which packs its commands with `command` here
(speedq.connection): one place that writes RESP.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

Reply = bytes | int | None | list["Reply"]

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0


def command(args: tuple[object, ...]) -> bytes:
    """A command in RESP, its words as redis-py's encoder writes them (text as UTF-8, numbers by
    repr); TypeError for any other word (bool, bytearray, ...), which redis-py's packer serves."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()  # a str enum's value, as redis-py's encoder writes it too
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"a {type(arg).__name__} word")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Unusable(Exception):
    """This reader cannot serve the call; the caller takes the ordinary path."""


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def call(self, *args: str) -> Reply:
        self.sock.sendall(command(args))
        return self._reply()

    def _reply(self) -> Reply:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise Unusable("connection closed mid-reply")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            if len(data) != size + 2:
                raise Unusable("connection closed mid-reply")
            return data[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise Unusable(f"Redis answered {body.decode(errors='replace')!r}")  # '-' errors among them

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def open_reader(url: str) -> Reader | None:
    """A connected, authenticated reader on the URL's database; None where it cannot do that."""
    try:
        parts = urlsplit(url)
        pairs = [item.partition("=") for item in parts.query.split("&") if item]
        path_db = parts.path.strip("/") if parts.scheme == "redis" else ""
        port = parts.port
    except ValueError:
        return None
    # Only forms whose meaning is plain: one database named once, a password with any user name
    # (a user alone is sent differently by redis-py), no other option.
    if (parts.scheme not in ("redis", "unix") or any(key != "db" for key, _, _ in pairs)
            or len(pairs) + bool(path_db) > 1 or (parts.username and parts.password is None)):
        return None
    db = path_db or (pairs[0][2] if pairs else "0")
    try:
        sock = _connect(unquote(parts.path)) if parts.scheme == "unix" else socket.create_connection(
            (parts.hostname or "localhost", port or 6379), CONNECT_TIMEOUT_S)
        sock.settimeout(READ_TIMEOUT_S)
    except OSError:
        return None
    reader = Reader(sock)
    try:
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else "default"
            reader.call("AUTH", user, unquote(parts.password))
        if db != "0":
            reader.call("SELECT", db)
    except (OSError, ValueError, Unusable):
        reader.close()
        return None
    return reader


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def get(url: str, key: str) -> tuple[bool, bytes | None]:
    """(served, value): served False means the caller must read the key the ordinary way."""
    reader = open_reader(url)
    if reader is None:
        return False, None
    try:
        value = reader.call("GET", key)
    except (OSError, ValueError, Unusable):
        return False, None
    finally:
        reader.close()
    if value is not None and not isinstance(value, bytes):
        return False, None
    return True, value
