"""Generate from a local first frame, store the clip in a bucket, and announce it as an asset.

``image_paths`` takes local paths or ``ObjectStoragePath`` URIs (``s3://aws_default@bucket/frame.png``):
the image is uploaded only when a new generation is paid for, never when a retry adopts one.
``output_path`` streams the verified MP4 to any ``ObjectStoragePath`` (here ``$KLING_STORAGE_ROOT``,
e.g. ``s3://aws_default@my-bucket/kling``; ``file://./output`` by default) before the task returns,
so the clip outlives both the 24 h video URL and the worker's disk. The ``kling_clips`` asset event
carries where the clip is and what made it; ``example_kling_publish_asset`` is scheduled on it.
``min_balance_credits`` stops the run before paying when the account runs low.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from kling_example_utils import ASSETS, CLIP_ASSET, POLL_INTERVAL, storage_root

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

with DAG(
    dag_id="example_kling_store_asset",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:
    generate = KlingGenerateVideoOperator(
        task_id="generate",
        prompt="The street from the photo comes alive: people walk by, lights flicker on",
        image_paths=[str(ASSETS / "first_frame.png")],
        # run_after, not ts_nodash: a manual run has no logical date, and Airflow 3.0 then has no ts_nodash.
        output_path=storage_root() + "/clips/{{ dag_run.run_after | ts_nodash }}.mp4",
        outlets=[CLIP_ASSET],
        min_balance_credits=200,
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    )
