"""Several processes on one key converge to the account's quota without a coordinator.

One quota-enforcing simulator in its own process (the documented ``default`` group: 50 queries and
5 submits a second) and two separate Python processes on the same key, each with the default
budgets (47.5 queries and 4.75 submits a second after the safety factor, so together about twice
the quota). Each process runs hundreds of ``KlingVideoTrigger.run()`` waits on its own event loop
while a thread pool submits a burst of creates. With one fixed budget per process (before the
adaptive pace) the same run drew 1.4 % 429s after convergence, 18-19 in all, and 9 on the creates.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_API_KEY, connection_uri
from tests.reliability.simulator_process import call, simulator_process

#: Run in the sequential (real-process) phase of ``make test``, not beside the parallel suite, which
#: starves these processes on a 2-core machine. Seen in CI (the budget trace in the failure message):
#: one process got three 429s on requests sent at its current pace within 4 s and halved three times
#: (2,850 -> 375 a minute), its 200 waiters reserving places ~34 s deep; the line now drains at the pace
#: of the moment as it grows back, so the waits' 45 s deadline covers it.
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 2
WAITS_PER_PROCESS = 200
SUBMITS_PER_PROCESS = 30
#: Generations finish this long after creation: the waits poll for about that long.
TOTAL_SECONDS = 26.0
#: Seconds after the first poll from which the processes count as converged (the first 429s of
#: each process halve its pace; two halvings bring 2 x 47.5/s under 50/s).
CONVERGED_AFTER = 5.0
#: A process reads a 429 and pauses this long after the server logged it at the latest (requests
#: already in flight, event-loop lag of 200 waits on a shared, noisy 2-core machine).
IN_FLIGHT_SLACK = 0.5


def _create_body(business_id: str) -> dict:
    return {
        "model": "kling-v3",
        "prompt": business_id,
        "mode": "std",
        "duration": 5,
        "aspect_ratio": "16:9",
        "audio": False,
        "client_business_id": business_id,
    }


@pytest.fixture
def quota_simulator(tmp_path):
    """The simulator in its own process, enforcing the documented default-group quotas."""
    with simulator_process(tmp_path, "--queued-seconds", "0.5", "--total-seconds", str(TOTAL_SECONDS)) as base:
        yield base


def _inside_retry_after(hits: list[dict], requests: list[dict]) -> list[tuple[float, float]]:
    """(429 time, request time) pairs: a request of the same process inside a 429's Retry-After window."""
    found = []
    for hit in hits:
        window_end = hit["t"] + float(hit["retry_after"])
        found += [(hit["t"], r["t"]) for r in requests if hit["t"] + IN_FLIGHT_SLACK < r["t"] < window_end]
    return found


def test_processes_sharing_a_key_converge_to_the_quota(quota_simulator):
    base = quota_simulator
    # The tasks to wait for, created before the quota is enforced (one set per process).
    task_ids = [
        [
            call(base, "/v1/videos/generations", _create_body(f"kl_mp_wait_{p}_{i}"))["id"]
            for i in range(WAITS_PER_PROCESS)
        ]
        for p in range(PROCESSES)
    ]
    call(base, "/_sim/config", {"enforce_quota": True})
    started = time.time()
    start_at = started + 6  # every process has imported Airflow by then
    # Generations end within 27 s; the deadline leaves room for the backlog a few halvings build.
    end_time = start_at + 45
    env = {**os.environ, "AIRFLOW_CONN_KLING_DEFAULT": connection_uri(base)}  # default budgets
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.multiprocess_worker",
                json.dumps(
                    {
                        "task_ids": task_ids[p],
                        "poll_interval": 1.0,
                        "end_time": end_time,
                        "start_at": start_at,
                        "submits": [f"kl_mp_burst_{p}_{i}" for i in range(SUBMITS_PER_PROCESS)],
                        "submit_threads": 10,
                    }
                ),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=90)
        assert worker.returncode == 0, err[-3000:]
        assert TEST_API_KEY not in out + err
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    # Every wait ended with its one, correct event.
    for p, output in enumerate(outputs):
        assert [len(events) for events in output["events"]] == [1] * WAITS_PER_PROCESS
        unsuccessful = [events[0] for events in output["events"] if events[0]["status"] != "success"]
        budgets = {k: v for k, v in output.items() if k not in ("events", "created")}
        assert not unsuccessful, f"{len(unsuccessful)} waits did not succeed ({budgets}), e.g. {unsuccessful[:3]}"
        assert [events[0]["kling_task_id"] for events in output["events"]] == task_ids[p]

    log = [r for r in call(base, "/_sim/requests")["requests"] if r["t"] >= start_at - 1]
    owner = {task_id: p for p in range(PROCESSES) for task_id in task_ids[p]}
    polls = [r for r in log if r["method"] == "GET" and r["path"].rsplit("/", 1)[-1] in owner]
    first = min(r["t"] for r in polls)
    converged = [r for r in polls if r["t"] >= first + CONVERGED_AFTER]
    limited = [r for r in polls if r["status"] == 429]
    limited_late = [r for r in converged if r["status"] == 429]
    served = sum(1 for r in polls if r["status"] == 200)
    summary = (
        f"{len(polls)} polls ({served} served, {served / (polls[-1]['t'] - first):.1f}/s), {len(limited)} 429s, "
        f"{len(limited_late)} of {len(converged)} after convergence; query decreases "
        f"{[o['query_decreases'] for o in outputs]}"
    )
    print(summary)
    # AIMD costs about one 429 per process per sawtooth (a halving, then ~20 s back up: >= 1,000
    # polls a cycle at 50/s), so 0.5 % after convergence leaves a 5x margin; the fixed pace of the
    # old single budget measured 1.4 % (15 of 1,070) here, and 18-19 429s in all.
    assert len(limited_late) <= max(2, math.ceil(len(converged) * 0.005)), summary
    assert len(limited) <= 10, summary
    # No process sent a poll inside the Retry-After window of a 429 it was given.
    for p in range(PROCESSES):
        mine = [r for r in polls if owner[r["path"].rsplit("/", 1)[-1]] == p]
        hits = [r for r in mine if r["status"] == 429]
        assert all("retry_after" in r for r in hits)
        assert _inside_retry_after(hits, mine) == [], f"process {p}: polls inside a Retry-After window"

    # The submit burst: every create succeeded once, none twice, few 429s, none inside a window.
    created = [task_id for output in outputs for task_id in output["created"]]
    assert len(created) == len(set(created)) == PROCESSES * SUBMITS_PER_PROCESS
    creates = [r for r in log if r["method"] == "POST" and r["path"] == "/v1/videos/generations"]
    ok = [r for r in creates if r["status"] == 200]
    assert sorted(r["body"]["client_business_id"] for r in ok) == sorted(
        f"kl_mp_burst_{p}_{i}" for p in range(PROCESSES) for i in range(SUBMITS_PER_PROCESS)
    )
    submit_429 = [r for r in creates if r["status"] == 429]
    print(
        f"{len(creates)} creates, {len(submit_429)} 429s; submit decreases {[o['submit_decreases'] for o in outputs]}"
    )
    # One halving per process brings 2 x 4.75/s under 5/s: at most a few 429s each (the submits
    # sharing the old single budget with the polls measured 9 of 69).
    assert len(submit_429) <= 3 * PROCESSES, f"{len(submit_429)} of {len(creates)} creates were rate limited"
    for p in range(PROCESSES):
        mine = [r for r in creates if r["body"]["client_business_id"].startswith(f"kl_mp_burst_{p}_")]
        hits = [r for r in mine if r["status"] == 429]
        assert _inside_retry_after(hits, mine) == [], f"process {p}: creates inside a Retry-After window"
