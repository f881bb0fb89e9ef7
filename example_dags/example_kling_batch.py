"""A batch: one generation per prompt with dynamic task mapping, at most 2 running at once.

Each mapped task instance has its own ``client_business_id`` (the map index is part of it), so
retries never pay twice for the same prompt.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

PROMPTS = [
    "A paper boat drifting down a rainy street gutter",
    "A hummingbird hovering at a red flower, macro",
    "Northern lights over a frozen lake, timelapse",
]

with DAG(
    dag_id="example_kling_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
    params={"prompts": PROMPTS},
) as dag:
    KlingGenerateVideoOperator.partial(
        task_id="generate",
        duration=5,
        poll_interval=POLL_INTERVAL,
        deferrable=True,
        max_active_tis_per_dag=2,
    ).expand(prompt=PROMPTS)
