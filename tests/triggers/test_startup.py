"""Many triggers starting on one loop: one connection lookup (single flight, short TTL), a bounded
number of start-ups per loop iteration, and poll wake-ups coalesced on a grid."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from airflow_provider_kling import compat, startup
from airflow_provider_kling.exceptions import KlingAuthError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.wait import WAKE_GRID_FRACTION, WAKE_GRID_MAX_SECONDS, coalesced
from tests.conftest import TEST_API_KEY, connection_uri, submit_task

ROTATED_KEY = "sk-kling-test-ROTATED-9a8b7c"


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """Counts the connection lookups of the async hooks (each still goes to Airflow's real lookup)."""
    calls: list[str] = []
    real = compat.get_async_connection

    async def counting(conn_id, hook=None):
        calls.append(conn_id)
        return await real(conn_id, hook=hook)

    monkeypatch.setattr(compat, "get_async_connection", counting)
    return calls


def test_many_hooks_entering_together_look_the_connection_up_once(sim, lookups):
    task = submit_task(business_id="kl_single_flight")

    async def one():
        async with KlingHook() as hook:
            return await hook.aget_task(task.id)

    async def many():
        return await asyncio.gather(*(one() for _ in range(200)))

    results = asyncio.run(many())
    assert [r.id for r in results] == [task.id] * 200
    assert lookups == ["kling_default"]


def test_a_hook_entering_after_the_ttl_sees_a_rotated_key(sim, lookups, monkeypatch):
    monkeypatch.setattr(startup, "SETTINGS_TTL_SECONDS", 0.3)
    task = submit_task(business_id="kl_rotated_key")

    async def key_and_task():
        async with KlingHook() as hook:
            assert hook._async_settings is not None
            # Tasks are per key on the simulator: a 404 (None) after the rotation means the key was accepted.
            return str(hook._async_settings.api_key), await hook.aget_task(task.id, missing_ok=True)

    async def scenario():
        first = await key_and_task()
        # The key is rotated: the API accepts only the new one, the connection carries it.
        sim.set_config(api_keys=[ROTATED_KEY])
        monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, key=ROTATED_KEY))
        async with KlingHook() as within_ttl:
            assert within_ttl._async_settings is not None
            shared_key = str(within_ttl._async_settings.api_key)
        await asyncio.sleep(0.5)
        return first, shared_key, await key_and_task()

    (key1, task1), shared_key, (key3, task3) = asyncio.run(scenario())
    assert key1 == TEST_API_KEY and task1 is not None
    assert shared_key == TEST_API_KEY  # started within the TTL: the shared lookup
    assert key3 == ROTATED_KEY and task3 is None  # the API accepted the new key (a wrong one raises 401)
    assert len(lookups) == 2


def test_a_failed_lookup_is_not_kept(sim, lookups, monkeypatch):
    """Every hook waiting on a failed lookup gets its error; the next hook looks up again at once."""
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, key="  "))

    async def enter():
        async with KlingHook() as hook:
            return hook._async_settings

    async def scenario():
        failed = await asyncio.gather(*(enter() for _ in range(20)), return_exceptions=True)
        monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url))
        return failed, await enter()

    failed, settings = asyncio.run(scenario())
    assert all(isinstance(err, KlingAuthError) for err in failed), failed
    assert settings is not None and str(settings.api_key) == TEST_API_KEY
    assert len(lookups) == 2


def test_start_ups_beyond_the_limit_wait_for_later_loop_iterations():
    n = 2 * startup.STARTS_PER_ITERATION + 50

    async def scenario():
        order: list[object] = []
        ticking = True

        def tick():  # one marker per loop iteration
            order.append("tick")
            if ticking:
                asyncio.get_running_loop().call_soon(tick)

        async def start(i: int):
            await startup.staggered_start()
            order.append(i)

        asyncio.get_running_loop().call_soon(tick)
        await asyncio.gather(*(start(i) for i in range(n)))
        ticking = False
        await asyncio.sleep(0)
        return order

    order = asyncio.run(scenario())
    started = [item for item in order if item != "tick"]
    assert started == list(range(n))  # all of them, in arrival order
    per_iteration, count = [], 0
    for item in order:
        if item == "tick":
            per_iteration.append(count)
            count = 0
        else:
            count += 1
    per_iteration.append(count)
    assert max(per_iteration) <= startup.STARTS_PER_ITERATION
    assert sum(1 for c in per_iteration if c) >= 3


@pytest.mark.parametrize("interval", [1.0, 10.0, 60.0])
def test_wake_ups_land_on_the_grid_within_half_a_step(interval):
    rng = random.Random(3)
    grid = min(WAKE_GRID_MAX_SECONDS, interval * WAKE_GRID_FRACTION)
    wakes = set()
    for _ in range(2000):
        now = 1000.0 + rng.uniform(0, 0.5)
        delay = interval * rng.uniform(0.95, 1.05)
        aligned = coalesced(now, delay, interval, remaining=1e9)
        assert abs(aligned - delay) <= grid / 2 + 1e-9
        steps = (now + aligned) / grid
        assert math.isclose(steps, round(steps), abs_tol=1e-6)
        wakes.add(round(steps))
    # 2,000 waits due over ~0.1 interval + 0.5 s wake in a handful of loop iterations.
    assert len(wakes) <= (0.1 * interval + 0.5) / grid + 2


def test_coalescing_never_passes_the_deadline_nor_wakes_before_retry_after():
    g = min(WAKE_GRID_MAX_SECONDS, 10.0 * WAKE_GRID_FRACTION)
    up, down = 10.0 - 0.3 * g, 10.0 - 0.7 * g
    assert math.isclose(coalesced(100.0, up, 10.0, remaining=1e9), 10.0)  # rounded up to the grid
    assert coalesced(100.0, up, 10.0, remaining=10.0 - 0.1 * g) == up  # ... but not past the deadline
    assert math.isclose(coalesced(100.0, down, 10.0, remaining=1e9), 10.0 - g)  # rounded down to the grid
    retry_after = 10.0 - 0.6 * g
    assert coalesced(100.0, down, 10.0, remaining=1e9, minimum=retry_after) == retry_after  # not before it
