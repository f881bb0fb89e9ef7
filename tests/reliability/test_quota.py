"""5,000 waits on one key against a server that enforces the documented per-key query quota."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_kling.ratelimit import reset_budgets
from airflow_provider_kling.sessions import CONNECTION_LIMIT
from airflow_provider_kling.triggers.kling import KlingVideoTrigger
from tests.conftest import connection_uri
from tests.reliability.simulator_process import call, simulator_process

N_WAITS = 5000
#: The documented ``svip`` query quota (30,000/min, 500/s); the ``default`` group's 50/s would make
#: 5,000 first polls take 100 s, the same behaviour only slower.
QUOTA = {"query_per_min": 30000, "query_per_sec": 500, "query_burst_10s": 5000}


@pytest.fixture
def quota_simulator(tmp_path):
    """The simulator in its own process (so 5,000 waits in this loop do not share its CPU)."""
    with simulator_process(tmp_path, "--queued-seconds", "0.2", "--total-seconds", "1") as base:
        yield base


async def test_many_waits_on_one_key_respect_the_quota(quota_simulator, monkeypatch):
    base = quota_simulator
    task_ids = [
        call(
            base,
            "/v1/videos/generations",
            {
                "model": "kling-v3",
                "prompt": f"p{i}",
                "mode": "std",
                "duration": 5,
                "aspect_ratio": "16:9",
                "audio": False,
                "client_business_id": f"kl_quota_{i}",
            },
        )["id"]
        for i in range(50)
    ]
    call(base, "/_sim/config", {"enforce_quota": True, **QUOTA})
    monkeypatch.setenv(
        "AIRFLOW_CONN_KLING_DEFAULT", connection_uri(base, max_requests_per_minute=QUOTA["query_per_min"])
    )
    reset_budgets()
    end_time = time.time() + 120
    triggers = [
        KlingVideoTrigger(**KlingVideoTrigger(task_ids[i % 50], poll_interval=2, end_time=end_time).serialize()[1])
        for i in range(N_WAITS)
    ]

    async def one(trigger):
        return [e.payload async for e in trigger.run()]

    async def storm():
        await asyncio.sleep(3)
        call(base, "/_sim/faults", {"fault": "rate_limit", "endpoint": "status", "count": 1, "retry_after": 2})

    started = time.time()
    results, _ = await asyncio.gather(asyncio.gather(*(one(t) for t in triggers)), storm())
    assert all(len(events) == 1 and events[0]["status"] == "success" for events in results)
    stats = call(base, "/_sim/stats")
    polls = [r for r in call(base, "/_sim/requests")["requests"] if r["path"].startswith("/v1/videos/generations/")]
    limited = [r for r in polls if r["status"] == 429]
    assert len(polls) == stats["requests"]["status"] >= N_WAITS
    # One 429 was injected; the client-side budget keeps the server's own quota 429s rare.
    assert stats["rate_limited"] == len(limited)
    assert len(limited) <= max(2, len(polls) // 100), f"{len(limited)} of {len(polls)} polls were rate limited"
    # Every 429 (Retry-After >= 1 s, the injected one 2 s) paused every wait on the key: after the
    # requests that already had their connection and slot when it was answered (one per connection
    # at most; on a starved machine they reach the server late), nothing was sent in its window.
    for hit in limited:
        inside = [r for r in polls if hit["t"] + 0.2 < r["t"] < hit["t"] + 0.95]
        assert len(inside) <= CONNECTION_LIMIT, f"{len(inside)} polls inside the Retry-After window of {hit}"
    assert time.time() - started < 100
