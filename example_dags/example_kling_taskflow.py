"""TaskFlow first: prompts come from a ``@task``, one generation per prompt by dynamic mapping.

Request arguments may be TaskFlow outputs (or lists holding them, or mapped values): the operator
checks them once they are resolved, before any request. Each mapped generation's
``client_business_id`` covers its map index *and* its request, so editing the list and re-running
the same run generates exactly the changed prompts and never returns another prompt's video.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from kling_example_utils import POLL_INTERVAL

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
)
def example_kling_taskflow():
    @task
    def subjects() -> list[str]:
        return ["a red fox", "a snow owl"]

    @task
    def to_prompt(subject: str) -> str:
        return f"{subject} crossing a frozen lake at dawn, slow dolly shot"

    @task
    def report(results: list[dict]) -> list[str]:
        for result in results:
            print(f"Kling task {result['id']}: {result['video_url']} (expires {result['expires_at']})")
        return [result["video_url"] for result in results]

    prompts = to_prompt.expand(subject=subjects())
    videos = KlingGenerateVideoOperator.partial(
        task_id="generate",
        mode="std",
        duration=5,
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    ).expand(prompt=prompts)
    report(videos.output)


dag = example_kling_taskflow()
