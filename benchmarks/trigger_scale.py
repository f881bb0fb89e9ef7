"""Triggerer scale: N KlingVideoTrigger.run() in one event loop, built from serialized kwargs.

``python -m benchmarks.trigger_scale --n 1000`` prints CPU per poll, RSS per trigger, loop lag,
sockets and event correctness.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import time

from benchmarks.common import (
    Figure,
    call,
    create,
    isolated_airflow_home,
    open_sockets,
    percentile,
    rss_kb,
    simulator,
    use_connection,
)

POLL_INTERVAL = 10.0


async def _run(base: str, n: int) -> dict:
    from airflow_provider_kling.triggers.kling import KlingVideoTrigger

    rng = random.Random(7)
    durations = [rng.uniform(15, 35) for _ in range(n)]
    # Tasks finish at spread-out times; triggers wait on them (several triggers per task keeps set-up short).
    tasks = {}
    for i in range(min(n, 200)):
        tasks[i] = create(base, f"bench [sim:total={durations[i]:.1f}]", f"kl_bench_{n}_{i}")
    stats0 = call(base, "/_sim/stats")["requests"]["status"]
    end_time = time.time() + 300
    classpath, _ = KlingVideoTrigger("x").serialize()
    triggers = [
        KlingVideoTrigger(
            **KlingVideoTrigger(tasks[i % len(tasks)], poll_interval=POLL_INTERVAL, end_time=end_time).serialize()[1]
        )
        for i in range(n)
    ]
    gc.collect()
    lags: list[tuple[float, float]] = []
    peaks: dict[str, float] = {"rss": 0, "sockets": 0, "cpu_mark": 0.0, "wall_mark": 0.0}
    base_rss = rss_kb()
    done = asyncio.Event()

    async def sampler():
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append((time.time() - wall0, (time.perf_counter() - t - 0.05) * 1000))
            peaks["sockets"] = max(peaks["sockets"], open_sockets()) if len(lags) % 10 == 0 else peaks["sockets"]

    async def rss_probe():
        await asyncio.sleep(POLL_INTERVAL * 1.2)  # all triggers started, connected and waiting
        peaks["rss"] = rss_kb()
        peaks["cpu_mark"], peaks["wall_mark"] = time.process_time(), time.time()

    async def one(trigger):
        return [e.payload async for e in trigger.run()]

    cpu0, wall0 = time.process_time(), time.time()
    sampler_task = asyncio.create_task(sampler())
    probe = asyncio.create_task(rss_probe())
    results = await asyncio.gather(*(one(t) for t in triggers))
    done.set()
    await sampler_task
    await probe
    cpu = time.process_time() - cpu0
    steady_cpu = time.process_time() - peaks["cpu_mark"]
    polls = call(base, "/_sim/stats")["requests"]["status"] - stats0
    log = call(base, "/_sim/requests")["requests"]
    steady_polls = sum(
        1 for r in log if r["path"].startswith("/v1/videos/generations/") and r["t"] >= peaks["wall_mark"]
    )
    sim_stats = call(base, "/_sim/stats")
    worst_at, worst = max(lags, key=lambda item: item[1])
    correct = sum(1 for events in results if len(events) == 1 and events[0]["status"] == "success")
    return {
        "n": n,
        "cpu_ms_per_poll": steady_cpu * 1000 / max(1, steady_polls),
        "polls": polls,
        "cpu_ms_per_poll_all": cpu * 1000 / max(1, polls),
        "wall": time.time() - wall0,
        "rss_kb_per_trigger": (peaks["rss"] - base_rss) / n,
        "lag_p99": percentile([lag for _, lag in lags], 0.99),
        "lag_max": worst,
        "lag_max_at": worst_at,
        "sockets": peaks["sockets"],
        "server_connections": sim_stats["max_concurrent_connections"],
        "correct": correct,
        "classpath": classpath,
    }


def measure(n: int) -> dict:
    isolated_airflow_home()
    with simulator("--queued-seconds", "2") as base:
        use_connection(base, max_requests_per_minute=600000)
        return asyncio.run(_run(base, n))


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


def figures(result: dict) -> list[Figure]:
    n = result["n"]
    # Every printed target is counted, at every N.
    return [
        Figure(
            f"N={n}: CPU per status poll (steady state)",
            result["cpu_ms_per_poll"],
            "ms",
            "<= 0.3",
            result["cpu_ms_per_poll"] <= 0.3,
        ),
        Figure(
            f"N={n}: CPU per poll incl. start-up (conn lookup)", result["cpu_ms_per_poll_all"], "ms", "(reported)", None
        ),
        Figure(
            f"N={n}: RSS per waiting trigger",
            result["rss_kb_per_trigger"],
            "KB",
            "<= 20",
            result["rss_kb_per_trigger"] <= 20,
        ),
        Figure(f"N={n}: event-loop lag p99", result["lag_p99"], "ms", "<= 50", result["lag_p99"] <= 50),
        Figure(
            f"N={n}: event-loop lag max (at t={result['lag_max_at']:.0f} s)",
            result["lag_max"],
            "ms",
            "(reported)",
            None,
        ),
        Figure(
            f"N={n}: open sockets (client) / server connections",
            f"{result['sockets']}/{result['server_connections']}",
            "",
            f"bounded << {n}",
            result["sockets"] <= 100 and result["server_connections"] <= 100,
        ),
        Figure(f"N={n}: correct events", f"{result['correct']}/{n}", "", "100 %", result["correct"] == n),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    for figure in figures(measure(parser.parse_args().n)):
        print(figure.line())
