"""Servers slower than the loop would send: no bursts after a slow spell, no queue piled on a busy
backend, every connection in use on a long link.

Triggers on one loop share one bounded connection pool. When the server answers slower than the
budget lets requests go (a loaded backend, a slow link), requests that already passed the budget
would queue for a connection and leave together the moment the server catches up, at the server's
speed rather than the budget's: a burst that its per-second quota answers with 429s.
"""

from __future__ import annotations

import asyncio
import time

from airflow_provider_kling.ratelimit import reset_budgets
from airflow_provider_kling.sessions import CONNECTION_LIMIT
from airflow_provider_kling.triggers.kling import KlingVideoTrigger
from tests.conftest import connection_uri, submit_task

#: The documented ``default`` group's query quota, enforced by the simulator (50/s, 3,000/min).
PER_SECOND = 50
N_TRIGGERS = 300
SLOW_SECONDS = 2.0
SLOW_FOR = 6.0


def _busiest_second(times: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_backlog_behind_a_slow_server_is_not_sent_as_a_burst(sim, monkeypatch):
    sim.set_config(queued_seconds=1, total_seconds=14)
    tasks = [submit_task(f"p{i}", business_id=f"kl_slow_{i}").id for i in range(10)]
    sim.set_config(enforce_quota=True, status_latency_seconds=SLOW_SECONDS)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url))
    reset_budgets()
    # The server's capacity while slow (pool size / latency) is under the budget's pace.
    assert CONNECTION_LIMIT / SLOW_SECONDS < PER_SECOND * 0.95
    started = time.time()
    end_time = started + 60
    triggers = [KlingVideoTrigger(tasks[i % 10], poll_interval=1, end_time=end_time) for i in range(N_TRIGGERS)]

    async def one(trigger):
        return [event.payload async for event in trigger.run()]

    async def catch_up():
        await asyncio.sleep(SLOW_FOR)
        # Only the latency changes (set_config would also restart the quota's buckets).
        sim.state.config = sim.state.config.updated(status_latency_seconds=0.0)

    results, _ = await asyncio.gather(asyncio.gather(*(one(t) for t in triggers)), catch_up())

    assert all(len(events) == 1 and events[0]["status"] == "success" for events in results)
    polls = [r for r in sim.requests() if r["path"].startswith("/v1/videos/generations/") and r["arrived"] >= started]
    limited = [r for r in polls if r["status"] == 429]
    # The server's own per-second quota (GCRA, 50 a second) is the judge: arrival times taken in the
    # simulator's thread jitter on a loaded machine, so no bound is put on one-second counts. The
    # burst this guards against drew 40 quota 429s of 714 polls (96 arrivals in one second).
    busiest = _busiest_second([r["arrived"] for r in polls])
    assert limited == [], f"{len(limited)} of {len(polls)} polls rate limited by the quota ({busiest} in 1 s)"


def _most_at_once(records: list[dict]) -> int:
    """The most requests the server held at once (between arrival and answer)."""
    edges = sorted([(r["arrived"], 1) for r in records] + [(r["t"], -1) for r in records])
    most = held = 0
    for _, step in edges:
        held += step
        most = max(most, held)
    return most


async def _waves(sim, task_id: str, waves: int, size: int) -> list[dict]:
    """``waves`` rounds of ``size`` concurrent status calls on one loop; the last round's log."""
    from airflow_provider_kling.hooks.kling import KlingHook

    async with KlingHook() as hook:
        for _ in range(waves):
            started = time.time()
            found = await asyncio.gather(*(hook.aget_task(task_id) for _ in range(size)))
            assert all(task.id == task_id for task in found)
    return [r for r in sim.requests() if r["path"].endswith(task_id) and r["arrived"] >= started]


async def test_a_backend_that_serves_one_at_a_time_is_not_sent_a_queue(sim, monkeypatch):
    """Requests a server can only queue add no throughput: the loop learns to send fewer at once."""
    task_id = submit_task(business_id="kl_one_worker").id
    sim.set_config(status_latency_seconds=0.01, status_workers=1)  # 100 answers a second, one at a time
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, max_requests_per_minute=600_000))
    reset_budgets()
    last = await _waves(sim, task_id, waves=3, size=150)
    assert len(last) == 150
    assert _most_at_once(last) <= CONNECTION_LIMIT // 4


async def test_a_slow_link_keeps_every_connection_busy(sim, monkeypatch):
    """Answers slow for the same time each (a long link, not a queue) keep the whole pool in use."""
    task_id = submit_task(business_id="kl_slow_link").id
    sim.set_config(status_latency_seconds=0.5)
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, max_requests_per_minute=600_000))
    reset_budgets()
    last = await _waves(sim, task_id, waves=3, size=2 * CONNECTION_LIMIT)
    assert _most_at_once(last) >= CONNECTION_LIMIT - 2
