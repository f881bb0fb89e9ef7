"""TEMPORARY placeholder DAG for developing the e2e harness: two independent deferrable sensors.

Both wait until ``run_after + 15 s`` through the real triggerer, so with one worker slot they can only be
``deferred`` at the same time if deferral releases the slot. To be replaced by DAGs using the provider.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG

WAIT = timedelta(seconds=float(os.environ.get("KLING_E2E_PLACEHOLDER_WAIT", "15")))

with DAG(
    dag_id="e2e_placeholder",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["e2e"],
):
    TimeDeltaSensor(task_id="wait_a", delta=WAIT, deferrable=True, timeout=120)
    TimeDeltaSensor(task_id="wait_b", delta=WAIT, deferrable=True, timeout=120)
