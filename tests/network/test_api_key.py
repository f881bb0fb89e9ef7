"""The API key: surrounding whitespace is stripped; any other control or non-Latin-1 character fails
with KlingAuthError before any request, on the sync path and in the trigger."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_kling.exceptions import KlingAuthError
from airflow_provider_kling.hooks.kling import KlingHook
from tests.conftest import TEST_API_KEY, submit_task
from tests.network.conftest import trigger_event, use_connection


def test_key_with_a_trailing_newline_works_sync_and_in_the_trigger(sim, monkeypatch):
    task = submit_task(business_id="kl_key_newline")
    sim.set_config(api_keys=[TEST_API_KEY])
    try:
        use_connection(monkeypatch, sim.base_url, key=f"  {TEST_API_KEY}\r\n")
        hook = KlingHook()
        try:
            ok, message = hook.test_connection()
        finally:
            hook.close()
        assert ok, message
        event = asyncio.run(trigger_event(task.id))
        assert event["status"] == "success", event
    finally:
        sim.set_config(api_keys=None)


@pytest.mark.parametrize("bad", ["\u200b", "\n", "\u4e2d"], ids=["zero-width-space", "newline", "non-latin1"])
def test_key_with_a_bad_character_fails_before_any_request(sim, monkeypatch, bad):
    key = TEST_API_KEY[:10] + bad + TEST_API_KEY[10:]
    use_connection(monkeypatch, sim.base_url, key=key)
    hook = KlingHook()
    try:
        with pytest.raises(KlingAuthError, match="at character 11 of") as info:
            hook.get_balance()
        ok, message = hook.test_connection()
    finally:
        hook.close()
    assert (not ok and "invalid API key" in message) or "character 11" in message
    event = asyncio.run(trigger_event("kl_whatever"))
    assert event["status"] == "error" and "at character 11 of" in event["message"], event
    assert sum(sim.stats()["requests"].values()) == 0
    text = str(info.value) + message + str(event)
    assert TEST_API_KEY[:10] not in text and TEST_API_KEY[10:] not in text
