"""Image-to-video: one image is the first frame. A local image is uploaded right before submitting."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

with DAG(
    dag_id="example_kling_image_to_video",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:

    @task
    def upload_first_frame() -> str:
        from kling_example_utils import upload

        return upload("first_frame.png")

    first_frame = upload_first_frame()
    generate = KlingGenerateVideoOperator(
        task_id="generate",
        prompt="The scene slowly comes alive, gentle camera push-in",
        image_urls=["{{ ti.xcom_pull(task_ids='upload_first_frame') }}"],
        duration=5,
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    )
    first_frame >> generate
