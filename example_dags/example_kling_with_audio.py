"""Video with sound (billed as "Sound"), a negative prompt and no watermark."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

with DAG(
    dag_id="example_kling_with_audio",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:
    KlingGenerateVideoOperator(
        task_id="generate_with_audio",
        prompt="Waves crashing on a rocky shore at sunset, seagulls calling",
        audio=True,
        negative_prompt="blur, text overlays, distorted faces",
        watermark=False,
        mode="std",
        duration=5,
        aspect_ratio="9:16",
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    )
