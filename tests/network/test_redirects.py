"""An API host that redirects (``http://`` in front of an HTTPS-only API, a moved host name): every
call fails at once, on both transports, with one request sent and the host to use named. API calls
never follow a redirect: the key would go along, and a create must not be sent twice."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_kling.exceptions import KlingAPIError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from tests.network.conftest import Redirector, trigger_event, use_connection

MOVED = "https://api.moved.example/v1/videos/generations"
HINT = "set the connection's host to https://api.moved.example"


@pytest.mark.parametrize("call", ["status", "create", "balance"])
def test_a_redirecting_host_fails_the_sync_call_at_once_naming_the_host(call, monkeypatch):
    with Redirector(MOVED) as redirector:
        use_connection(monkeypatch, f"http://127.0.0.1:{redirector.port}")
        hook = KlingHook()
        try:
            with pytest.raises(KlingAPIError) as info:
                if call == "status":
                    hook.get_task("kl_x")
                elif call == "create":
                    hook.submit_video(KlingVideoRequest.from_kwargs(prompt="a heron"), "kl_redirected")
                else:
                    hook.get_balance()
        finally:
            hook.close()
        assert info.value.code == "redirect", info.value
        assert HINT in str(info.value)
        assert len(redirector.hits) == 1, redirector.hits  # not retried, never re-sent


def test_a_redirecting_host_ends_the_trigger_with_one_error_event(monkeypatch):
    with Redirector(MOVED) as redirector:
        use_connection(monkeypatch, f"http://127.0.0.1:{redirector.port}")
        event = asyncio.run(trigger_event("kl_x", seconds=20.0))
        assert event["status"] == "error", event
        assert HINT in event["message"], event
        assert len(redirector.hits) == 1, redirector.hits
