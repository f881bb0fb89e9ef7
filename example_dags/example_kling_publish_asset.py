"""Scheduled on the ``kling_clips`` asset: read where the clip is and what made it, ask a human,
then publish.

The asset event's ``extra`` (written by ``example_kling_store_asset``) holds ``output_path``,
``size_bytes``, ``sha256``, the Kling task id, the request's mode, duration, aspect ratio, audio
and prompt digest. The approval step is Airflow's human-in-the-loop ``ApprovalOperator`` where the
Airflow version has it (the standard provider's ``hitl`` module); without it, the DAG publishes
directly. A rejection skips ``publish``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.exceptions import AirflowOptionalProviderFeatureException
from airflow.sdk import DAG, task
from kling_example_utils import CLIP_ASSET

with DAG(
    dag_id="example_kling_publish_asset",
    schedule=[CLIP_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kling", "example"],
) as dag:

    @task(inlets=[CLIP_ASSET])
    def describe_clip(**context: Any) -> dict[str, Any]:
        """The clip of the asset event that triggered this run (else the latest one)."""
        from airflow_provider_kling.media import resolve_location

        events = context["triggering_asset_events"].get(CLIP_ASSET) or context["inlet_events"][CLIP_ASSET]
        extra = dict(events[-1].extra)
        size = resolve_location(extra["output_path"], "output_path").size()
        if size != extra["size_bytes"]:
            raise ValueError(f"{extra['output_path']} has {size} bytes, the asset event says {extra['size_bytes']}")
        print(
            f"Clip {extra['output_path']} ({extra['size_bytes']} bytes, sha256 {extra['sha256'][:12]}…) made by "
            f"Kling task {extra['kling_task_id']}: {extra['mode']}, {extra['duration']} s, {extra['aspect_ratio']}, "
            f"audio={extra['audio']}"
        )
        return extra

    @task
    def publish(clip: dict[str, Any]) -> str:
        """Hand the stored clip to the publishing system (here: report what would be published)."""
        print(f"Publishing {clip['output_path']} (sha256 {clip['sha256']})")
        return clip["output_path"]

    clip = describe_clip()
    try:
        from airflow.providers.standard.operators.hitl import ApprovalOperator
    except (ImportError, AirflowOptionalProviderFeatureException):  # no human-in-the-loop (Airflow < 3.1)
        clip >> publish(clip)
    else:
        approve = ApprovalOperator(
            task_id="approve",
            subject="Publish the new Kling clip?",
            body="Clip: {{ ti.xcom_pull(task_ids='describe_clip')['output_path'] }}",
            defaults="Reject",
            response_timeout=timedelta(hours=24),
        )
        clip >> approve >> publish(clip)
