"""JSON bodies as real fronts send them: a UTF-8 byte order mark before the JSON (some .NET and IIS
fronts) is still JSON, on success and error answers, sync and in the trigger."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_kling.exceptions import KlingContentPolicyError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest
from tests.conftest import submit_task
from tests.network.conftest import trigger_event


def test_a_status_with_a_byte_order_mark_is_read_sync(sim):
    task = submit_task(business_id="kl_bom_sync")
    sim.add_fault(fault="bom", endpoint="status", count=-1)
    sim.add_fault(fault="bom", endpoint="balance", count=-1)
    hook = KlingHook()
    try:
        seen = hook.get_task(task.id)
        balance = hook.get_balance()  # another endpoint, the same decoder
    finally:
        hook.close()
    assert seen.id == task.id
    assert balance is not None
    assert sim.stats()["requests"]["status"] == 1  # read at once, not retried as malformed


def test_a_status_with_a_byte_order_mark_is_read_by_the_trigger(sim):
    task = submit_task(business_id="kl_bom_trigger")
    sim.add_fault(fault="bom", endpoint="status", count=-1)
    event = asyncio.run(trigger_event(task.id, seconds=20.0))
    assert event["status"] == "success", event


def test_an_error_with_a_byte_order_mark_keeps_its_code(sim):
    sim.add_fault(fault="bom", endpoint="create", count=-1)
    hook = KlingHook()
    try:
        with pytest.raises(KlingContentPolicyError):
            hook.submit_video(KlingVideoRequest.from_kwargs(prompt="a heron [sim:content_policy_422]"), "kl_bom_422")
    finally:
        hook.close()
