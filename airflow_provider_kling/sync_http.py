"""The sync transport's ``requests`` session: proxies and CAs decided in :mod:`.api`, attempts
bounded by wall-clock time.

``requests`` only has per-socket-operation timeouts, so a server that sends one byte every 10 s
would hold a call for ever. Inside :func:`attempt_deadline`, every read of a response (status line,
headers and body, through a proxy tunnel too) waits at most until the attempt's deadline, and a
read that starts after it fails as a timeout. No thread is involved: the deadline is a context
variable read by the session's own connection classes.

Sending a request body is bounded the same way, block by block. ``requests`` sends a body with one
``sendall`` whose timeout (the connect timeout) covers the whole body, so an upload that needs
longer than 10 s on a slow link failed on every attempt; here each block of :data:`SEND_BLOCK`
bytes has the socket's timeout to go out (a stalled server still fails fast) and the whole body the
attempt's deadline.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from airflow_provider_kling.api import proxy_for, tls_verify

#: Bytes of a request body sent per socket operation (each has the socket's timeout to go out).
SEND_BLOCK = 64 * 1024
#: ``time.monotonic()`` by which the current attempt's reads must end (``None`` = unbounded).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("kling_attempt_deadline", default=None)


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Bound every response read in this block to ``seconds`` from now (wall-clock, not per read)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _operation_timeout(deadline: float, previous: float | None, doing: str) -> float:
    """The socket timeout for one operation: its own (``previous``), cut to what is left before the
    attempt's ``deadline`` (``time.monotonic()``).

    :raises TimeoutError: the deadline has passed.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"the attempt's wall-clock limit passed{doing}")
    return left if previous is None else min(previous, left)


class _DeadlineIO(socket.SocketIO):
    """A socket reader whose every read waits at most until the attempt's deadline."""

    def readinto(self, b: Any) -> int | None:
        deadline = _deadline.get()
        if deadline is None:
            return super().readinto(b)
        sock = self._sock  # type: ignore[attr-defined]
        previous = sock.gettimeout()
        sock.settimeout(_operation_timeout(deadline, previous, ""))
        try:
            return super().readinto(b)
        finally:
            sock.settimeout(previous)


class _MakefileShim:
    """What :class:`http.client.HTTPResponse` needs of a socket: ``makefile('rb')``, deadline-bound."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self._sock, socket.socket):  # TLS inside a TLS proxy tunnel: per-read timeouts only
            return self._sock.makefile(mode, *args, **kwargs)
        # As socket.makefile does: the reader holds a reference, so closing the connection while the
        # response is still being read (``Connection: close``) defers the real close.
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(_DeadlineIO(self._sock, "rb"))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(_MakefileShim(sock), *args, **kwargs)  # type: ignore[arg-type]


class _DeadlineSend:
    """Request bodies sent block by block: each block within the socket's timeout (progress), the
    whole body within the attempt's deadline."""

    sock: Any

    def send(self, data: Any) -> None:
        deadline = _deadline.get()
        sock = self.sock
        if deadline is None or not isinstance(sock, socket.socket) or not isinstance(data, (bytes, bytearray)):
            return super().send(data)  # type: ignore[misc, no-any-return]
        view = memoryview(data)
        previous = sock.gettimeout()
        try:
            for start in range(0, len(view), SEND_BLOCK):
                sock.settimeout(_operation_timeout(deadline, previous, " while sending the request"))
                sock.sendall(view[start : start + SEND_BLOCK])
        finally:
            sock.settimeout(previous)
        return None


class _HTTPConnection(_DeadlineSend, HTTPConnection):
    response_class = _DeadlineResponse


class _HTTPSConnection(_DeadlineSend, HTTPSConnection):
    response_class = _DeadlineResponse


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """Direct and proxied pools use the deadline-bound connection classes."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class KlingSession(requests.Session):
    """A ``requests`` session that routes each URL by :func:`~.api.proxy_for` and verifies TLS by
    :func:`~.api.tls_verify`, so API calls, uploads and downloads agree with the async path.

    The environment is read per request (``NO_PROXY`` per URL); nothing else of it is trusted
    (no ``.netrc`` credentials).

    :param proxy: the connection's ``proxy`` extra (overrides the environment).
    :param verify: the connection's ``verify`` extra (overrides the environment).
    """

    def __init__(self, proxy: str | None = None, verify: bool | str | None = None) -> None:
        super().__init__()
        self.trust_env = False
        self._proxy_override = proxy
        self._verify_override = verify
        for prefix in ("http://", "https://"):
            self.mount(prefix, _DeadlineAdapter())

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        merged: Any = super().merge_environment_settings(url, proxies, stream, verify, cert)
        text = url.decode() if isinstance(url, bytes) else url or ""
        if not proxies:
            merged["proxies"] = self._proxies(text)
        if verify is None:
            merged["verify"] = tls_verify(self._verify_override)
        return merged

    def rebuild_proxies(self, prepared_request: Any, proxies: Any) -> Any:
        """A redirect (a CDN pointing at its storage) is routed by :func:`~.api.proxy_for` for the URL
        it lands on, not by the decision made for the first URL (``requests`` keeps that one when the
        environment is not trusted)."""
        return super().rebuild_proxies(prepared_request, self._proxies(prepared_request.url or ""))

    def _proxies(self, url: str) -> dict[str, str]:
        proxy = proxy_for(url, self._proxy_override)
        return {urlsplit(url).scheme.lower(): proxy} if proxy else {}
