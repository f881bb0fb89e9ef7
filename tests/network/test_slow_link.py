"""Request bodies on slow links: an upload takes as long as its bytes need, a stalled one ends.

``requests`` sends a body with one ``sendall`` whose timeout (the connect timeout) covers the whole
body, so a 10 MB image on an uplink under ~1 MB/s failed on every attempt. The stub here reads the
body at a set rate from a small receive buffer, like a slow uplink; the connect timeout is cut to
1 s, so 10 MB at 2 MB/s (about 5 s) shows it (the client's send buffer holds at most 4 MB here).
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import pytest

from airflow_provider_kling.exceptions import KlingAPIError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.media.images import MAX_UPLOAD_BYTES
from airflow_provider_kling.simulator.server import server_ssl_context
from tests.network.conftest import use_connection
from tests.network.servers import LoopbackServer

CONNECT_TIMEOUT = 1.0
RATE = 2_000_000  # bytes a second
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES - 8)
UPLOADED = b'{"success": true, "data": {"url": "https://files.example/in.png"}}'


class _SlowUplink(LoopbackServer):
    """A loopback server that reads each request body at ``rate`` bytes a second (``0``: reads the
    headers, then nothing) and answers like the upload endpoint."""

    threaded = True

    def __init__(self, rate: int, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(receive_buffer=64 * 1024)
        self.rate = rate
        self.received: list[int] = []
        self._tls = tls

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        if self._tls is None:
            self._upload(conn)
            return
        with self._tls.wrap_socket(conn, server_side=True) as tls_conn:  # the plain socket is detached
            self._upload(tls_conn)

    def _upload(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
        )
        got = len(body)
        while got < length and not self.stop.is_set():
            if not self.rate:
                self.stop.wait(0.1)
                continue
            chunk = conn.recv(min(65536, length - got))
            if not chunk:
                return
            got += len(chunk)
            time.sleep(len(chunk) / self.rate)
        self.received.append(got)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(UPLOADED), UPLOADED)
        )


@pytest.fixture
def short_connect_timeout(monkeypatch):
    monkeypatch.setattr("airflow_provider_kling.hooks.kling.CONNECT_TIMEOUT", CONNECT_TIMEOUT)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_upload_slower_than_the_connect_timeout_completes(scheme, short_connect_timeout, monkeypatch, tmp_path, pki):
    ca, cert, key = pki
    tls = server_ssl_context(str(cert), str(key)) if scheme == "https" else None
    image = tmp_path / "in.png"
    image.write_bytes(IMAGE)
    with _SlowUplink(RATE, tls) as server:
        extra = {"verify": str(ca)} if tls else {}
        use_connection(monkeypatch, f"{scheme}://127.0.0.1:{server.port}", **extra)
        hook = KlingHook()
        started = time.monotonic()
        try:
            url = hook.upload_image(image)
        finally:
            hook.close()
        took = time.monotonic() - started
    assert url == "https://files.example/in.png"
    assert server.received[-1] > len(IMAGE), server.received  # the whole multipart body
    # It took many connect timeouts, so a whole-body timeout of one would have failed it.
    assert took > 4 * CONNECT_TIMEOUT, took


def test_a_stalled_upload_fails_within_the_connect_timeout_per_attempt(short_connect_timeout, monkeypatch, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(IMAGE)
    with _SlowUplink(0) as server:
        use_connection(monkeypatch, f"http://127.0.0.1:{server.port}")
        hook = KlingHook()
        started = time.monotonic()
        try:
            with pytest.raises(KlingAPIError) as info:
                hook.upload_image(image)
        finally:
            hook.close()
        took = time.monotonic() - started
    assert info.value.code in ("timeout", "connection_error"), info.value
    # 4 attempts, each ending one connect timeout after the send buffers filled, with 1 + 2 + 4 s of
    # backoff between them (jittered).
    assert took < 4 * (CONNECT_TIMEOUT + 2) + 7 * 1.2 + 5, took
    assert all(got < len(IMAGE) for got in server.received), server.received


def test_an_upload_attempt_is_sized_for_its_file_on_a_slow_link():
    from types import SimpleNamespace

    from airflow_provider_kling.api import (
        CONNECT_TIMEOUT as CONNECT,
    )
    from airflow_provider_kling.api import (
        SLOW_LINK_BYTES_PER_SECOND,
        UPLOAD_READ_TIMEOUT,
        Call,
        attempt_seconds,
    )

    settings: Any = SimpleNamespace(read_timeout=30.0)
    far = time.time() + 3600
    upload = Call("POST", "/v1/uploads/images", "upload", upload=("in.png", IMAGE, "image/png"))
    sending = len(IMAGE) / SLOW_LINK_BYTES_PER_SECOND
    assert sending == pytest.approx(160.0)
    assert attempt_seconds(settings, upload, far) == pytest.approx(CONNECT + UPLOAD_READ_TIMEOUT + sending)
    assert attempt_seconds(settings, Call.status("kl_x", False), far) == CONNECT + 30.0
    assert attempt_seconds(settings, upload, time.time() + 5) <= 5.0  # still cut to the deadline
