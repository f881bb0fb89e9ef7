"""The async path: one shared aiohttp session per event loop, refcounted, same retries as sync."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import pytest

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.exceptions import KlingAPIError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import TaskStatus
from airflow_provider_kling.sessions import CONNECTION_LIMIT, Permits, session_stats
from tests.conftest import submit_task


async def test_concurrent_borrowers_share_one_session_and_last_closes_it(sim):
    task = submit_task()
    seen = set()
    inside = asyncio.Event()
    release = asyncio.Event()
    entered = 0

    async def borrower():
        nonlocal entered
        async with KlingHook() as hook:
            seen.add(id(hook._session))
            entered += 1
            if entered == 200:
                inside.set()
            await release.wait()
            found = await hook.aget_task(task.id)
            assert found.id == task.id

    tasks = [asyncio.create_task(borrower()) for _ in range(200)]
    await asyncio.wait_for(inside.wait(), 10)
    assert session_stats() == {"sessions": 1, "borrowers": 200}
    release.set()
    await asyncio.gather(*tasks)
    assert len(seen) == 1
    assert session_stats() == {"sessions": 0, "borrowers": 0}
    assert 1 <= sim.stats()["max_concurrent_connections"] <= CONNECTION_LIMIT


async def test_a_new_session_after_the_last_borrower_left(sim):
    async with KlingHook() as first:
        session = first._session
    assert session.closed
    async with KlingHook() as second:
        assert second._session is not session and not second._session.closed


async def test_async_get_task_parses_and_retries_like_sync(sim):
    task = submit_task(business_id="kl_async_retry")
    sim.add_fault(fault="server_error", endpoint="status", count=1)
    sim.add_fault(fault="rate_limit", endpoint="status", count=1, retry_after=1)
    async with KlingHook() as hook:
        found = await hook.aget_task("kl_async_retry", policy=RetryPolicy(backoff_base=0.05))
        assert found.id == task.id and found.status in (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS)
        assert await hook.aget_task("kl_missing", missing_ok=True) is None
        sim.add_fault(fault="malformed", endpoint="status", count=-1)
        with pytest.raises(KlingAPIError, match="malformed"):
            await hook.aget_task(task.id, policy=RetryPolicy(transient_attempts=2, backoff_base=0.01))
    assert sim.stats()["requests"]["status"] >= 5


async def test_no_unclosed_session_warnings(sim):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with KlingHook() as hook:
            await hook.aget_task("kl_nothing", missing_ok=True)
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


def test_sessions_are_per_loop(sim):
    sessions = []

    async def use():
        async with KlingHook() as hook:
            sessions.append(hook._session)
            await hook.aget_task("kl_x", missing_ok=True)

    asyncio.run(use())
    asyncio.run(use())
    assert sessions[0] is not sessions[1] and all(s.closed for s in sessions)


def test_no_threads_or_loops_left_behind(sim):
    import threading

    before = {t.ident for t in threading.enumerate()}
    hook = KlingHook()
    hook.get_task("kl_nothing", missing_ok=True)
    hook.close()

    async def use():
        async with KlingHook() as async_hook:
            await async_hook.aget_task("kl_nothing", missing_ok=True)
        return asyncio.get_running_loop()

    loop = asyncio.run(use())
    assert loop.is_closed()
    assert session_stats() == {"sessions": 0, "borrowers": 0}
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], left


async def test_async_attempt_counts_match_the_policy(sim):
    """The first attempt runs outside tenacity but still counts as attempt 1 of the policy."""
    sim.add_fault(fault="server_error", endpoint="status", count=-1)
    async with KlingHook() as hook:
        with pytest.raises(KlingAPIError) as info:
            await hook.aget_task("kl_any", policy=RetryPolicy(transient_attempts=3, backoff_base=0.01))
        assert info.value.status == 500
        assert sim.stats()["requests"]["status"] == 3
        with pytest.raises(KlingAPIError):
            await hook.aget_task("kl_any", policy=RetryPolicy.single_attempt())
    assert sim.stats()["requests"]["status"] == 4


async def test_permits_serve_waiters_in_order_and_end_at_the_deadline():
    permits = Permits(1)
    now = time.time()
    assert await permits.acquire(now + 5)
    order: list[str] = []

    async def waiter(name: str, seconds: float) -> None:
        order.append(f"{name}:{await permits.acquire(time.time() + seconds)}")

    late = asyncio.create_task(waiter("late", 0.2))
    first = asyncio.create_task(waiter("first", 5))
    second = asyncio.create_task(waiter("second", 5))
    await asyncio.wait_for(late, 2)
    assert order == ["late:False"]  # its deadline passed: no permit taken
    assert permits.waiting == 2
    permits.release()
    await first
    permits.release()
    await second
    assert order == ["late:False", "first:True", "second:True"]
    permits.release()
    assert await permits.acquire(time.time())  # every permit came back


async def test_a_permit_handed_to_a_cancelled_waiter_is_passed_on():
    permits = Permits(1)
    assert await permits.acquire(time.time() + 5)
    cancelled = asyncio.create_task(permits.acquire(time.time() + 5))
    behind = asyncio.create_task(permits.acquire(time.time() + 5))
    await asyncio.sleep(0)
    permits.release()  # handed to ``cancelled``, which is cancelled before it runs again
    cancelled.cancel()
    assert await asyncio.wait_for(behind, 2)


async def test_a_call_waiting_for_a_connection_ends_at_its_deadline_unsent(sim):
    task = submit_task(business_id="kl_permits_full")
    sim.add_fault(fault="slow", endpoint="status", count=CONNECTION_LIMIT, delay=4)
    async with KlingHook() as hook:
        holders = [asyncio.create_task(hook.aget_task(task.id)) for _ in range(CONNECTION_LIMIT)]
        for _ in range(100):  # until every connection is held by a slow answer
            if sim.stats()["requests"]["status"] >= CONNECTION_LIMIT:
                break
            await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(KlingAPIError) as caught:
            await hook.aget_task(task.id, policy=RetryPolicy.single_attempt(time.time() + 1))
        assert caught.value.code == "timeout"
        assert time.monotonic() - started < 2.5
        assert sim.stats()["requests"]["status"] == CONNECTION_LIMIT  # it never reached the server
        assert all(found.id == task.id for found in await asyncio.gather(*holders))
