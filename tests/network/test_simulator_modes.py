"""The simulator's network fault modes, seen from a plain HTTP client."""

from __future__ import annotations

import email.utils
import http.client
import json
import threading
import time

import pytest

from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer
from airflow_provider_kling.simulator.__main__ import build_parser, config_from_args
from airflow_provider_kling.simulator.faults import FaultSpec
from tests.conftest import TEST_API_KEY

HEADERS = {"Authorization": f"Bearer {TEST_API_KEY}"}


def _get(
    server: SimulatorServer, path: str, target: str | None = None, timeout: float = 10
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("GET", target or path, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize(
    ("spec", "past"), [({"retry_after": 0}, False), ({"retry_after": -30, "retry_after_http_date": True}, True)]
)
def test_retry_after_zero_and_past_date(sim, spec, past):
    sim.add_fault(fault="rate_limit", endpoint="balance", **spec)
    response = _get(sim, "/v1/balance")
    assert response.status == 429
    value = response.headers["Retry-After"]
    if past:
        assert email.utils.parsedate_to_datetime(value).timestamp() < time.time() - 20
    else:
        assert value == "0"


def test_trickle_sends_headers_then_one_byte_at_a_time(sim):
    sim.add_fault("trickle:balance:1:delay=0.2")
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    conn.request("GET", "/v1/balance", headers=HEADERS)
    response = conn.getresponse()
    length = int(response.headers["Content-Length"])
    first = response.read(1)
    conn.close()
    assert response.status == 200 and len(first) == 1 and length > 20


def test_status_latency_holds_no_other_request(sim):
    sim.set_config(status_latency_seconds=5)
    try:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (_get(sim, "/v1/videos/generations/kl_x"), done.set()), daemon=True)
        thread.start()
        assert _get(sim, "/v1/balance").status == 200
        assert not done.is_set()  # the status answer is still 5 s away
        thread.join(10)
        assert done.is_set()
    finally:
        sim.set_config(status_latency_seconds=0)


def test_proxy_only_refuses_direct_requests_and_answers_proxied_ones(proxy_sim):
    assert _get(proxy_sim, "/v1/balance").status == 421
    assert _get(proxy_sim, "/v1/balance", target=f"{proxy_sim.base_url}/v1/balance").status == 200
    assert proxy_sim.stats()["requests"]["balance"] == 1


def test_cli_options():
    args = build_parser().parse_args(
        [
            "--status-latency",
            "5",
            "--proxy-only",
            "--fault",
            "trickle:status:-1:delay=10",
            "--fault",
            "rate_limit:create:1:retry_after=0",
        ]
    )
    config = config_from_args(args)
    assert (config.status_latency_seconds, config.proxy_only) == (5.0, True)
    assert FaultSpec.parse("trickle:status:-1:delay=10").delay == 10
    assert json.loads(json.dumps(config.public()))["proxy_only"] is True


def test_https_with_a_given_certificate(pki):
    import ssl

    from airflow_provider_kling.simulator.server import server_ssl_context

    ca, cert, key = pki
    with SimulatorServer(SimulatorConfig(), ssl_context=server_ssl_context(str(cert), str(key))) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        conn = http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=5, context=ssl.create_default_context(cafile=str(ca))
        )
        conn.request("GET", "/v1/balance", headers=HEADERS)
        assert conn.getresponse().status == 200
        conn.close()
