"""Worker-slot seconds per generation through real Airflow (``python -m benchmarks.worker_slot``).

Samples every task instance's state every 0.2 s and adds up the seconds spent ``running`` (holding a
worker slot), for the deferrable and blocking sensor and generate operator on the same 30 s generation.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import Figure, simulator, use_connection

DAGS = Path(__file__).resolve().parent / "dags"


def measure() -> list[Figure]:
    import json
    import os

    from tests.e2e.airflow_stack import AirflowStack

    with simulator("--queued-seconds", "2") as base:
        use_connection(base)
        env = {"AIRFLOW_CONN_KLING_DEFAULT": os.environ["AIRFLOW_CONN_KLING_DEFAULT"]}
        json.loads(env["AIRFLOW_CONN_KLING_DEFAULT"])
        stack = AirflowStack(DAGS, env=env, parallelism=4)
        try:
            stack.start(timeout=180)
            run_id = stack.trigger_dag("bench_worker_slot")
            running: dict[str, float] = {}
            last = time.monotonic()
            while stack.dag_run_state("bench_worker_slot", run_id) not in ("success", "failed"):
                time.sleep(0.2)
                now = time.monotonic()
                for task_id, state in stack.task_states("bench_worker_slot", run_id).items():
                    if state == "running":
                        running[task_id] = running.get(task_id, 0.0) + (now - last)
                last = now
            state = stack.dag_run_state("bench_worker_slot", run_id)
        finally:
            stack.stop()
    figures = []
    for kind in ("sensor", "generate"):
        deferred, blocking = running.get(f"{kind}_deferrable", 0.0), running.get(f"{kind}_blocking", 0.0)
        ratio = blocking / deferred if deferred else float("inf")
        figures += [
            Figure(
                f"{kind}: worker-slot seconds, deferrable", deferred, "s", "<= 3", deferred <= 3 and state == "success"
            ),
            Figure(f"{kind}: worker-slot seconds, blocking", blocking, "s", "(reported)", None),
            Figure(f"{kind}: blocking / deferrable", ratio, "x", ">= 10", ratio >= 10),
        ]
    return figures


if __name__ == "__main__":
    for figure in measure():
        print(figure.line())
