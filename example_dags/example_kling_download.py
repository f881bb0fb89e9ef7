"""Generate, then download the MP4 before its URL expires (Kling keeps it for 24 h only).

The download task refuses an expired URL with a clear message: getting the video again means
generating again (clear the generate task; its retry makes a new generation).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

with DAG(
    dag_id="example_kling_download",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:
    generate = KlingGenerateVideoOperator(
        task_id="generate",
        prompt="A steaming cup of coffee on a wooden table, morning light",
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    )

    @task(retries=3)
    def download(result: dict) -> str:
        from kling_example_utils import download

        print(f"URL valid until {result['expires_at']}")
        return download(result, f"download_{result['id']}")

    download(generate.output)
