"""HTTPS with a private CA: trusted through REQUESTS_CA_BUNDLE, SSL_CERT_FILE or the ``verify`` extra
on the sync, upload, download and trigger paths; refused without it; ``verify=false`` skips checks."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_kling.exceptions import KlingAPIError
from airflow_provider_kling.hooks.kling import KlingHook
from tests.network.conftest import every_path, use_connection


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_ca_from_the_environment(tls_sim, pki, monkeypatch, tmp_path, variable):
    monkeypatch.setenv(variable, str(pki[0]))
    use_connection(monkeypatch, tls_sim.base_url)
    result = every_path(tmp_path, f"kl_tls_{variable.lower()}")
    assert result["uploaded"].startswith("https://127.0.0.1:")
    assert result["video"].read_bytes()[4:8] == b"ftyp"


def test_ca_from_the_verify_extra(tls_sim, pki, monkeypatch, tmp_path):
    use_connection(monkeypatch, tls_sim.base_url, verify=str(pki[0]))
    every_path(tmp_path, "kl_tls_extra")


def test_without_the_ca_every_path_refuses_the_server(tls_sim, monkeypatch):
    use_connection(monkeypatch, tls_sim.base_url)
    hook = KlingHook()
    try:
        ok, message = hook.test_connection()
    finally:
        hook.close()
    assert not ok and "connection failed" in message

    async def poll():
        async with KlingHook() as hook:
            await hook.aget_task("kl_any", missing_ok=True)

    with pytest.raises(KlingAPIError, match="connection failed"):
        asyncio.run(poll())
    assert tls_sim.stats()["requests"]["balance"] == 0


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_extra_skips_verification(tls_sim, monkeypatch, tmp_path):
    use_connection(monkeypatch, tls_sim.base_url, verify="false")
    every_path(tmp_path, "kl_tls_noverify")
