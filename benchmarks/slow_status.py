"""Slow status endpoint: N triggers on one loop while every status answer takes 5 s, 20 s deadline.

Every trigger must yield its one event by its deadline + 2 s: connection-pool waits, budget waits and
the attempt itself are all bounded by the deadline. ``python -m benchmarks.slow_status`` prints the
distribution of event times relative to the deadline and how many were late.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.common import Figure, create, isolated_airflow_home, percentile, simulator, use_connection

LATENCY = 5.0
DEADLINE = 20.0
SLACK = 2.0
POLL_INTERVAL = 1.0


async def _run(base: str, n: int) -> list[tuple[str, float]]:
    from airflow_provider_kling.triggers.kling import KlingVideoTrigger

    # Tasks that never finish inside the benchmark: every trigger waits until its deadline.
    tasks = [create(base, "slow [sim:total=600]", f"kl_slow_{i}") for i in range(min(n, 50))]
    end_time = time.time() + DEADLINE
    triggers = [
        KlingVideoTrigger(tasks[i % len(tasks)], poll_interval=POLL_INTERVAL, end_time=end_time) for i in range(n)
    ]

    async def one(trigger: KlingVideoTrigger) -> tuple[str, float]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1, events
        return events[0]["status"], time.time() - end_time

    return await asyncio.gather(*(one(t) for t in triggers))


def measure(n: int) -> dict:
    isolated_airflow_home()
    with simulator("--status-latency", str(LATENCY), "--queued-seconds", "1") as base:
        use_connection(base)
        results = asyncio.run(_run(base, n))
    offsets = [offset for _, offset in results]
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "n": n,
        "min": min(offsets),
        "p50": percentile(offsets, 0.50),
        "p99": percentile(offsets, 0.99),
        "max": max(offsets),
        "late": sum(1 for offset in offsets if offset > SLACK),
        "statuses": statuses,
    }


def figures(result: dict) -> list[Figure]:
    n = result["n"]
    prefix = f"slow status ({LATENCY:.0f} s), N={n}, deadline {DEADLINE:.0f} s: event time - deadline"
    rows = [Figure(f"{prefix} {q}", result[q], "s", "(reported)", None) for q in ("min", "p50", "p99")]
    rows.append(Figure(f"{prefix} max", result["max"], "s", f"<= {SLACK:.0f}", result["max"] <= SLACK))
    rows.append(
        Figure(
            f"slow status, N={n}: events later than deadline + 2 s", float(result["late"]), "", "0", not result["late"]
        )
    )
    statuses = ", ".join(f"{k}={v}" for k, v in sorted(result["statuses"].items()))
    rows.append(Figure(f"slow status, N={n}: event statuses", statuses, "", "(reported)", None))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    for figure in figures(measure(parser.parse_args().n)):
        print(figure.line())
