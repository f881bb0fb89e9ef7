"""A server slower than the request budget's pace: what it could not take yet never reaches it as a burst.

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
    assert limited == [], f"{len(limited)} of {len(polls)} polls were rate limited by the server's quota"
    assert _busiest_second([r["arrived"] for r in polls]) <= PER_SECOND + 2
