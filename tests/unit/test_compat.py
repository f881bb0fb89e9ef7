"""The version-compat layer: every symbol resolves, and both async connection paths read a real connection."""

from __future__ import annotations

import json

import pytest

from airflow_provider_kling import compat
from airflow_provider_kling.hooks.kling import KlingHook
from tests.conftest import TEST_API_KEY


def test_symbols_resolve_on_this_airflow():
    assert callable(compat.mask_secret) and callable(compat.has_fs)
    assert compat.has_fs("file")
    assert compat.AIRFLOW_VERSION.major == 3
    assert compat.AIRFLOW_V_3_2_PLUS <= compat.AIRFLOW_V_3_1_PLUS


@pytest.mark.parametrize("upstream", [True, False], ids=["common-compat", "own-fallback"])
async def test_async_connection_and_extra(monkeypatch, upstream):
    if upstream and not compat.UPSTREAM_ASYNC_CONNECTION:
        pytest.skip("common-compat < 1.23.0 here: only the provider's own path exists")
    monkeypatch.setattr(compat, "UPSTREAM_ASYNC_CONNECTION", upstream)
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLING_COMPAT",
        json.dumps(
            {"conn_type": "kling", "host": "http://127.0.0.1:9", "password": TEST_API_KEY, "extra": {"timeout": 7}}
        ),
    )
    conn = await compat.get_async_connection("kling_compat", hook=KlingHook)
    assert (conn.conn_type, conn.host, conn.password) == ("kling", "http://127.0.0.1:9", TEST_API_KEY)
    assert await compat.get_async_extra_dejson(conn) == {"timeout": 7}
