"""Fixtures for network conditions: a clean proxy/CA environment, a private CA, HTTPS and proxy-only
simulators, and one helper that drives every path (sync API, upload, download, trigger)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.ratelimit import reset_budgets
from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer
from airflow_provider_kling.simulator.server import server_ssl_context
from airflow_provider_kling.triggers.kling import KlingVideoTrigger
from tests.conftest import connection_uri, wait_terminal
from tests.network.certs import make_ca_and_server

NET_ENV = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
FAST = {"queued_seconds": 0.1, "total_seconds": 0.4}


@pytest.fixture(autouse=True)
def clean_network_env(monkeypatch):
    """No proxy or CA variables from the machine leak into these tests."""
    for name in NET_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    reset_budgets()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(ca.pem, server.pem, server.key)`` of a private CA made for this test session."""
    return make_ca_and_server(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_simulator(pki):
    _, cert, key = pki
    server = SimulatorServer(SimulatorConfig(**FAST), ssl_context=server_ssl_context(str(cert), str(key)))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxy_only_simulator():
    server = SimulatorServer(SimulatorConfig(**FAST, proxy_only=True))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_sim(tls_simulator):
    tls_simulator.reset()
    return tls_simulator


@pytest.fixture
def proxy_sim(proxy_only_simulator):
    proxy_only_simulator.reset()
    return proxy_only_simulator


def use_connection(monkeypatch, base_url: str, key: str | None = None, **extra: object) -> None:
    """Point ``kling_default`` at ``base_url`` (with connection extras)."""
    args = (base_url,) if key is None else (base_url, key)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(*args, **extra))
    reset_budgets()


async def trigger_event(task_id: str, seconds: float = 15.0, poll: float = 0.1) -> dict:
    trigger = KlingVideoTrigger(task_id, poll_interval=poll, end_time=time.time() + seconds)
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def every_path(tmp_path: Path, business_id: str) -> dict:
    """:func:`sync_paths`, then :func:`trigger_path` on its task; raises on the first step that fails."""
    result = sync_paths(tmp_path, business_id)
    result["event"] = trigger_path(result["task"].id)
    return result


def trigger_path(task_id: str) -> dict:
    """The trigger's wait (async, the loop's shared session) until success; returns the event."""
    event = asyncio.run(trigger_event(task_id))
    assert event["status"] == "success", event
    return event


def sync_paths(tmp_path: Path, business_id: str) -> dict:
    """Upload, test the connection, submit, poll and download with the sync hook."""
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    hook = KlingHook()
    try:
        uploaded = hook.upload_image(image)
        ok, message = hook.test_connection()
        assert ok, message
        task = hook.submit_video(KlingVideoRequest.from_kwargs(prompt="a heron at dawn"), business_id)
        done = wait_terminal(hook, task.id)
        video = hook.download_video(done, tmp_path / "out.mp4")
    finally:
        hook.close()
    return {"uploaded": uploaded, "task": done, "video": video}


class Redirector:
    """A loopback server that answers every GET with a 302 and every POST with a 308 to ``target`` (a CDN
    pointing at storage, an HTTPS-only front); :attr:`hits` lists the requests it answered."""

    def __init__(self, target: str) -> None:
        import http.server

        location = target
        hits = self.hits = []  # type: list[str]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._redirect()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._redirect()

            def _redirect(self) -> None:
                hits.append(f"{self.command} {self.path}")
                self.send_response(302 if self.command == "GET" else 308)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    def __enter__(self) -> Redirector:
        import threading

        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
