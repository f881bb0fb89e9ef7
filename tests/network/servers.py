"""Raw loopback servers for network conditions no HTTP framework produces on purpose."""

from __future__ import annotations

import socket
import threading
from typing import TypeVar

_Server = TypeVar("_Server", bound="LoopbackServer")


class LoopbackServer:
    """A TCP server on 127.0.0.1 in a daemon thread: every accepted connection goes to
    :meth:`handle` (in a thread of its own when :attr:`threaded`), and is closed after it.

    Run with ``with Server() as server:``; :attr:`port` is its port, :attr:`stop` is set on exit.

    :param receive_buffer: ``SO_RCVBUF`` of the listener (inherited by connections), for a server
        that must not swallow a body into its buffers.
    """

    threaded = False

    def __init__(self, receive_buffer: int | None = None) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.threaded:
                threading.Thread(target=self._handle_and_close, args=(conn,), daemon=True).start()
            else:
                self._handle_and_close(conn)

    def _handle_and_close(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self: _Server) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(5)
        self._listener.close()
