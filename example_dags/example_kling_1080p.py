"""1080P (pro), 10 s, in one task: ``KlingGenerateVideoOperator`` submits and waits (deferrable)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

with DAG(
    dag_id="example_kling_1080p",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:
    KlingGenerateVideoOperator(
        task_id="generate_1080p",
        prompt="City timelapse from day to night, aerial view, cinematic lighting",
        mode="pro",
        duration=10,
        aspect_ratio="16:9",
        poll_interval=POLL_INTERVAL,
        timeout=900,
        deferrable=True,
        retries=2,
    )
