"""Worker-slot benchmark: the same 30 s generation waited for four ways."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor

with DAG("bench_worker_slot", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    for deferrable in (True, False):
        name = "deferrable" if deferrable else "blocking"
        KlingGenerateVideoOperator(
            task_id=f"generate_{name}",
            prompt=f"g {name} [sim:total=30]",
            poll_interval=2,
            timeout=300,
            deferrable=deferrable,
        )
        submit = KlingSubmitOperator(task_id=f"submit_{name}", prompt=f"s {name} [sim:total=30]")
        submit >> KlingVideoSensor(
            task_id=f"sensor_{name}",
            kling_task_id=f"{{{{ ti.xcom_pull(task_ids='submit_{name}') }}}}",
            poke_interval=2,
            timeout=300,
            deferrable=deferrable,
        )
