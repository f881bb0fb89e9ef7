"""First + last frame: two images, the video moves from the first to the last (at most 10 s)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor

with DAG(
    dag_id="example_kling_first_last_frame",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:

    @task
    def upload_frames() -> list[str]:
        from kling_example_utils import upload

        return [upload("first_frame.png"), upload("last_frame.png")]

    frames = upload_frames()
    submit = KlingSubmitOperator(
        task_id="submit",
        prompt="Day turns into night over the same street",
        image_urls=[
            "{{ ti.xcom_pull(task_ids='upload_frames')[0] }}",
            "{{ ti.xcom_pull(task_ids='upload_frames')[1] }}",
        ],
        duration=10,
        aspect_ratio="16:9",
    )
    wait = KlingVideoSensor(
        task_id="wait",
        kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        poke_interval=POLL_INTERVAL,
        deferrable=True,
    )
    frames >> submit >> wait
