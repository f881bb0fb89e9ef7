"""What a finished wait does before its task returns: store the video, fill in the link, emit assets.

Shared by :class:`~airflow_provider_kling.operators.kling.KlingGenerateVideoOperator` and
:class:`~airflow_provider_kling.sensors.kling.KlingVideoSensor`, in every mode (blocking, poke,
reschedule, after a deferral).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.assets import asset_extra, emit_asset_events
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links import OUTPUT_PATH_XCOM_KEY, VIDEO_URL_XCOM_KEY
from airflow_provider_kling.media import Location
from airflow_provider_kling.media.storage import output_file
from airflow_provider_kling.models import is_plain_literal, unresolved

if TYPE_CHECKING:
    from airflow_provider_kling.models import KlingVideoRequest


def check_output_path(value: Any, *, at_parse: bool = False) -> Location | None:
    """Resolve ``output_path`` (``None`` when not given): a file to write, never a folder.

    :param at_parse: check only what is known at DAG parse (skip Jinja and run-time values, and the
        local disk, which is the worker's).
    :raises KlingValidationError: see :func:`~airflow_provider_kling.media.storage.output_file`.
    """
    if value is None:
        return None
    if at_parse and (unresolved(value) or not (is_plain_literal(value) or hasattr(value, "fs"))):
        return None
    return output_file(value, "output_path", look=not at_parse)


def push_pending_link(context: Mapping[str, Any]) -> None:
    """Before deferring: the link reads these keys while the task waits; they fill in on success."""
    context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
    context["ti"].xcom_push(key=OUTPUT_PATH_XCOM_KEY, value="")


def deliver(
    context: Mapping[str, Any],
    result: dict[str, Any],
    *,
    output_path: Any,
    kling_conn_id: str,
    outlets: Iterable[Any],
    request: KlingVideoRequest | None = None,
) -> dict[str, Any]:
    """Store the video at ``output_path`` (when given), push the link's XComs, emit asset events.

    :param result: the result dict of the finished generation.
    :param output_path: where to store the video (rendered), or ``None``.
    :param request: the request that made it, when known (adds its fields to the asset events).
    :return: the result, with ``output_path``, ``size_bytes`` and ``sha256`` when stored.
    """
    ti = context["ti"]
    ti.xcom_push(key=VIDEO_URL_XCOM_KEY, value=result["video_url"])
    if output_path is not None:
        hook = KlingHook(kling_conn_id)
        try:
            stored = hook.download_video(result, output_path)
        finally:
            hook.close()
        result = {**result, **stored.to_dict()}
    ti.xcom_push(key=OUTPUT_PATH_XCOM_KEY, value=result.get("output_path") or "")
    emit_asset_events(context, outlets, asset_extra(result, request))
    return result
