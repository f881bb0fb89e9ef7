"""A real forward proxy on 127.0.0.1 for tests: absolute-form HTTP forwarding and CONNECT tunnels.

It records every request line it receives, so a test can prove which calls went through it.
``names`` maps a ``host:port`` the client asks for to where it really is (a tunnel to
``kling.proxied:443`` reaches the simulator's TLS port), so a client that tried to connect
directly instead would fail loudly.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from urllib.parse import urlsplit

_HOP_BY_HOP = ("connection:", "proxy-connection:", "keep-alive:", "proxy-authorization:")


class ForwardProxy:
    """Run with ``with ForwardProxy(names) as proxy:``; :attr:`url` is the proxy URL.

    :param names: ``{"name:port": ("127.0.0.1", real_port)}`` for names that do not resolve.
    :param auth: ``(user, password)`` the proxy requires (``Proxy-Authorization: Basic``, else 407,
        like a corporate proxy); requests it refused are in :attr:`refused`.
    :param tls: serve the proxy itself over TLS (an ``https://`` proxy URL).
    """

    def __init__(
        self,
        names: dict[str, tuple[str, int]] | None = None,
        auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.names = dict(names or {})
        self._tls = tls
        self._expected_auth = (
            None if auth is None else "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        )
        self.refused: list[tuple[str, str]] = []
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def requests(self, method: str | None = None) -> list[str]:
        """Targets seen (of one method, e.g. ``CONNECT``), in order."""
        with self._lock:
            return [target for m, target in self.seen if method is None or m == method]

    # -- running ------------------------------------------------------------------------

    def __enter__(self) -> ForwardProxy:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="test-forward-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.sleep(0.05)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()

    # -- proxying -----------------------------------------------------------------------

    def _upstream(self, hostport: str) -> tuple[str, int]:
        if hostport in self.names:
            return self.names[hostport]
        host, _, port = hostport.rpartition(":")
        return host.strip("[]"), int(port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = [line for line in head.split("\r\n") if line]
            method, target, version = request_line.split(" ", 2)
            with self._lock:
                self.seen.append((method, target))
            if self._expected_auth is not None and self._expected_auth != next(
                (h.split(":", 1)[1].strip() for h in header_lines if h.lower().startswith("proxy-authorization:")), None
            ):
                with self._lock:
                    self.refused.append((method, target))
                writer.write(
                    b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, version, header_lines, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream(target))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _forward(
        self,
        method: str,
        target: str,
        version: str,
        header_lines: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        if not url.scheme:  # not absolute-form: not a proxy request
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        length = next((int(h.split(":", 1)[1]) for h in header_lines if h.lower().startswith("content-length:")), 0)
        body = await reader.readexactly(length) if length else b""
        kept = [h for h in header_lines if not h.lower().startswith(_HOP_BY_HOP)]
        up_reader, up_writer = await asyncio.open_connection(*self._upstream(url.netloc))
        try:
            head = "\r\n".join([f"{method} {target} {version}", *kept, "Connection: close", "", ""])
            up_writer.write(head.encode("latin-1") + body)
            await up_writer.drain()
            writer.write(await up_reader.read())  # the upstream closes after its answer
            await writer.drain()
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
