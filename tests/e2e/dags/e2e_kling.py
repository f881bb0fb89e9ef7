"""DAGs for the real-Airflow end-to-end tests (the simulator's prompt markers set the timings)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("e2e_kling_two_waits", schedule=None, start_date=START, catchup=False) as two_waits:
    # Two generations, one worker slot: both must be deferred at the same time.
    KlingGenerateVideoOperator(
        task_id="generate", prompt="a [sim:total=15]", poll_interval=1, timeout=120, deferrable=True
    )
    submit = KlingSubmitOperator(task_id="submit", prompt="b [sim:total=15]")
    submit >> KlingVideoSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        poke_interval=1,
        timeout=120,
        deferrable=True,
    )

with DAG("e2e_kling_worker_kill", schedule=None, start_date=START, catchup=False) as worker_kill:
    # Waits in the worker, so the test can SIGKILL the process after the generation was paid for.
    KlingGenerateVideoOperator(
        task_id="generate",
        prompt="c [sim:total=10]",
        poll_interval=1,
        timeout=120,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with DAG("e2e_kling_triggerer_kill", schedule=None, start_date=START, catchup=False) as triggerer_kill:
    # A ~25 s deferred wait: long enough to kill and restart the triggerer in the middle of it. No retries,
    # so the test sees the first try succeed (a retry would hide a lost trigger).
    KlingGenerateVideoOperator(
        task_id="generate", prompt="d [sim:total=25]", poll_interval=1, timeout=180, deferrable=True, retries=0
    )
