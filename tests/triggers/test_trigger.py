"""KlingVideoTrigger driven directly (``run().asend(None)``) against the simulator."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from airflow_provider_kling.triggers.kling import KlingVideoTrigger
from tests.conftest import TEST_API_KEY, connection_uri, submit_task


async def one_event(trigger):
    events = [e.payload async for e in trigger.run()]
    assert len(events) == 1
    return events[0]


def test_serialize_round_trip_has_no_key():
    trigger = KlingVideoTrigger("video_1", "kling_default", 5, 1_800_000_000.0, "kl_1")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_kling.triggers.kling.KlingVideoTrigger"
    assert kwargs == {
        "kling_task_id": "video_1",
        "kling_conn_id": "kling_default",
        "poll_interval": 5.0,
        "end_time": 1_800_000_000.0,
        "client_business_id": "kl_1",
    }
    assert KlingVideoTrigger(**kwargs).serialize() == (classpath, kwargs)
    json.dumps(kwargs)
    assert TEST_API_KEY not in json.dumps(kwargs) + repr(trigger)


async def test_success_event(sim):
    task = submit_task()
    trigger = KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 20, client_business_id="kl_trigger")
    event = await trigger.run().asend(None)
    payload = event.payload
    assert payload["status"] == "success" and payload["kling_task_id"] == task.id
    assert payload["task"]["video_url"].endswith(f"{task.id}.mp4")
    assert payload["client_business_id"] == "kl_trigger"
    json.dumps(payload)


async def test_exactly_one_event(sim):
    task = submit_task(business_id="kl_one")
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 20))
    assert payload["status"] == "success"


@pytest.mark.parametrize(
    ("marker", "code"),
    [("[sim:content_policy]", "content_policy_violation"), ("[sim:generation_failed]", "generation_failed")],
)
async def test_failed_event(sim, marker, code):
    task = submit_task(prompt=f"p {marker}", business_id=f"kl_{code}")
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 20))
    assert payload["status"] == "failed" and payload["error_code"] == code


async def test_timeout_event_at_absolute_deadline(sim):
    task = submit_task(prompt="slow [sim:never_finish]", business_id="kl_never")
    started = time.time()
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=started + 1.5))
    assert payload["status"] == "timeout" and "timed out" in payload["message"]
    assert time.time() - started < 3


async def test_restart_keeps_the_same_deadline(sim):
    task = submit_task(prompt="slow [sim:never_finish]", business_id="kl_restart")
    end_time = time.time() + 2
    first = KlingVideoTrigger(task.id, poll_interval=0.2, end_time=end_time)
    gen = first.run()
    step = gen.asend(None)
    import asyncio

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(step, 0.5)
    await gen.aclose()
    _, kwargs = first.serialize()
    payload = await one_event(KlingVideoTrigger(**kwargs))
    assert payload["status"] == "timeout"
    assert abs(time.time() - end_time) < 1


async def test_429_storm_is_waited_out(sim):
    task = submit_task(business_id="kl_storm")
    sim.add_fault(fault="rate_limit", endpoint="status", count=3, retry_after=1)
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 20))
    assert payload["status"] == "success"
    limited = [r for r in sim.requests() if r["status"] == 429]
    assert len(limited) == 3
    for before, after in itertools.pairwise(limited):
        assert after["t"] - before["t"] >= 0.95


async def test_transient_errors_are_tolerated(sim):
    task = submit_task(business_id="kl_transient")
    sim.add_fault(fault="server_error", endpoint="status", count=4)
    sim.add_fault(fault="drop", endpoint="status", count=2)
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 30))
    assert payload["status"] == "success"


async def test_persistent_errors_end_in_error_event(sim):
    task = submit_task(business_id="kl_broken")
    sim.add_fault(fault="server_error", endpoint="status", count=-1)
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.1, end_time=time.time() + 120))
    assert payload["status"] == "error" and "500" in payload["message"]


async def test_bad_key_is_an_error_event_not_a_retry(sim, monkeypatch):
    sim.set_config(api_keys=["sk-other"])
    payload = await one_event(KlingVideoTrigger("video_x", poll_interval=0.1, end_time=time.time() + 10))
    assert payload["status"] == "error" and payload["error_type"] == "KlingAuthError"
    assert TEST_API_KEY not in json.dumps(payload)


async def test_legacy_shapes_are_normalised(sim):
    task = submit_task(prompt="old [sim:legacy]", business_id="kl_legacy")
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 20))
    assert payload["status"] == "success" and payload["task"]["video_url"]


async def test_completed_without_url_is_a_contract_error(sim):
    task = submit_task(prompt="x [sim:no_url]", business_id="kl_nourl")
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.1, end_time=time.time() + 20))
    assert payload["status"] == "error" and payload["error_code"] == "provider_contract_error"


async def test_late_visibility_is_tolerated(sim):
    task = submit_task(prompt="x [sim:late_visibility]", business_id="kl_late")
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.3, end_time=time.time() + 20))
    assert payload["status"] == "success"


async def test_no_connection_key_is_error_event(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, key=""))
    payload = await one_event(KlingVideoTrigger("video_x", poll_interval=0.1, end_time=time.time() + 10))
    assert payload["status"] == "error" and "no API key" in payload["message"]
    assert sim.stats()["requests"]["total"] == 0


async def test_any_exception_becomes_the_one_error_event(sim):
    # An unknown connection raises AirflowNotFoundException (not a Kling error) inside run().
    payload = await one_event(KlingVideoTrigger("video_x", "no_such_connection", 0.1, time.time() + 10))
    assert payload["status"] == "error" and payload["kling_task_id"] == "video_x"
    assert payload["error_type"] and "no_such_connection" in payload["message"]


async def test_throttled_polls_wait_for_retry_after_then_finish(sim):
    task = submit_task(business_id="kl_throttled_poll")
    sim.add_fault(fault="rate_limit", endpoint="status", count=3, retry_after=1)
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.2, end_time=time.time() + 30))
    assert payload["status"] == "success"
    assert sim.stats()["faults_fired"].get("rate_limit") == 3


async def test_a_budget_paused_past_the_deadline_ends_in_timeout_at_the_deadline(sim):
    """Another caller's long Retry-After pauses every poll of this key beyond this wait's end: the
    wait keeps its deadline and says it was rate limited (it used to end in ``error`` after ten
    polls, as if the server were broken)."""
    from airflow_provider_kling.hooks.kling import KlingHook

    task = submit_task(business_id="kl_budget_paused")
    KlingHook().settings.budgets.query.pause(120.0)
    started = time.time()
    payload = await one_event(KlingVideoTrigger(task.id, poll_interval=0.1, end_time=started + 3))
    assert payload["status"] == "timeout" and "rate limited" in payload["message"]
    assert time.time() - started >= 2.9
    assert [r for r in sim.requests() if r["method"] == "GET"] == []
