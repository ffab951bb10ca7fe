"""A TCP proxy in front of a real redis-server that can lose one reply: the command reaches Redis,
which runs it, and the client's connection is cut before the answer gets back, as when the
network or the client's host fails right after a write. redis-py then sends the command again on
a new connection (speedq's clients retry on a connection error), to a Redis that has already run
it once."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class ReplyLoss:
    upstream_port: int
    marker: bytes = b""  # the next command holding these bytes loses its reply
    lost: int = 0  # replies lost so far
    port: int = 0
    _server: socket.socket = field(init=False)
    _ends: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, marker: bytes) -> None:
        self.marker = marker

    def close(self) -> None:
        """Stop accepting, and cut every connection it carries."""
        self._server.close()
        for end in self._ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._ends += [client, upstream]
            doomed = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, doomed), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, doomed), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, doomed: threading.Event) -> None:
        tail = b""  # a command's bytes may come in more than one read
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.marker and self.marker in tail + data:
                    self.marker = b""
                    doomed.set()  # before Redis can answer
                tail = data[-len(self.marker):] if self.marker else b""
                upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket, doomed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if doomed.is_set():
                    self.lost += 1
                    break
                client.sendall(data)
        for end in (client, upstream):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
