"""The default budget against a quota-enforcing simulator (``python -m benchmarks.quota``).

N=1,000 triggers at 10 s want 100 status polls a second; the default query budget (3,000/min) must
pace them at <= 50/s with no 429 and every event correct.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Figure, call, create, isolated_airflow_home, simulator, use_connection

POLL_INTERVAL = 10.0


def measure_default_quota(n: int = 1000) -> list[Figure]:
    """With the default budget (3,000/min) against a server enforcing the documented default quota."""
    from airflow_provider_kling.ratelimit import reset_budgets

    isolated_airflow_home()
    reset_budgets()
    with simulator("--queued-seconds", "2") as base:
        use_connection(base)
        tasks = [create(base, f"quota [sim:total={15 + i % 20}]", f"kl_quota_{i}") for i in range(100)]
        call(base, "/_sim/config", {"enforce_quota": True})

        async def run_all():
            from airflow_provider_kling.triggers.kling import KlingVideoTrigger

            end_time = time.time() + 300
            triggers = [
                KlingVideoTrigger(tasks[i % 100], poll_interval=POLL_INTERVAL, end_time=end_time) for i in range(n)
            ]

            async def one(trigger):
                return [e.payload async for e in trigger.run()]

            return await asyncio.gather(*(one(t) for t in triggers))

        results = asyncio.run(run_all())
        log = [r for r in call(base, "/_sim/requests")["requests"] if r["path"].startswith("/v1/videos/generations/")]
        per_second: dict[int, int] = {}
        for record in log:
            per_second[int(record["t"])] = per_second.get(int(record["t"]), 0) + 1
        limited = sum(1 for r in log if r["status"] == 429)
    correct = sum(1 for events in results if events[0]["status"] == "success")
    peak = max(per_second.values())
    return [
        Figure(f"default quota, N={n} at 10 s: peak status requests/s", float(peak), "req/s", "<= 50", peak <= 50),
        Figure(f"default quota, N={n}: 429 responses", float(limited), "", "0", limited == 0),
        Figure(f"default quota, N={n}: correct events", f"{correct}/{n}", "", "100 %", correct == n),
    ]


if __name__ == "__main__":
    for figure in measure_default_quota():
        print(figure.line())
