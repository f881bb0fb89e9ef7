"""Text-to-video, 720P (std), 5 s, 16:9: submit, wait on the triggerer, download.

``KlingSubmitOperator`` pushes the task id to XCom right after submitting; the deferrable
``KlingVideoSensor`` waits without holding a worker slot; the last task saves the MP4 before
its URL expires (24 h).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor

with DAG(
    dag_id="example_kling_text_to_video",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
    params={"prompt": "A golden cat running on a sunlit meadow, slow motion, cinematic"},
) as dag:
    submit = KlingSubmitOperator(
        task_id="submit",
        prompt="{{ params.prompt }}",
        mode="std",
        duration=5,
        aspect_ratio="16:9",
    )
    wait = KlingVideoSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        poke_interval=POLL_INTERVAL,
        timeout=600,
        deferrable=True,
    )

    @task
    def save(result: dict) -> str:
        from kling_example_utils import download

        return download(result, "text_to_video")

    submit >> wait
    save(wait.output)
