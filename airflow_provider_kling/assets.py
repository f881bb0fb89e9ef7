"""Asset events of a finished generation: what made the clip and where it is.

When a task has ``outlets``, each outlet asset's event carries :func:`asset_extra` as its ``extra``
(Airflow 3: ``context["outlet_events"][asset].extra``), so a DAG scheduled on the asset reads from
``triggering_asset_events`` / ``inlet_events`` where the clip is stored and what request made it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_kling.models import KlingVideoRequest

log = logging.getLogger(__name__)

#: Keys of the result dict stored with the video (present when ``output_path`` was given).
STORED_KEYS = ("output_path", "size_bytes", "sha256")


def asset_extra(result: Mapping[str, Any], request: KlingVideoRequest | None = None) -> dict[str, Any]:
    """The ``extra`` of an asset event, JSON only.

    :param result: the task's result dict (``id``, ``client_business_id``, ``model``, ``video_url``,
        ``expires_at`` and, when stored, ``output_path``, ``size_bytes``, ``sha256``).
    :param request: the request, when the task knows it (the generate operator does; a sensor waiting
        for someone else's task id does not, so its events carry what the API returned).
    """
    extra: dict[str, Any] = {
        "kling_task_id": result.get("id"),
        "client_business_id": result.get("client_business_id"),
        "model": result.get("model") or (request.model if request else None),
    }
    if request is not None:
        extra.update(
            mode=request.mode,
            duration=request.duration,
            aspect_ratio=request.aspect_ratio,
            audio=request.audio,
            prompt_sha256=hashlib.sha256(request.prompt.encode()).hexdigest(),
        )
    extra.update(video_url=result.get("video_url"), expires_at=result.get("expires_at"))
    extra.update({key: result[key] for key in STORED_KEYS if result.get(key) is not None})
    return extra


def emit_asset_events(context: Mapping[str, Any], outlets: Iterable[Any], extra: Mapping[str, Any]) -> int:
    """Attach ``extra`` to the event of every outlet asset of the running task; return how many.

    Asset aliases are left alone (an alias needs the concrete asset added, which is the DAG
    author's choice).
    """
    from airflow.sdk import Asset

    events = context.get("outlet_events")
    if events is None:
        return 0
    count = 0
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            events[outlet].extra.update(extra)
            count += 1
    if count:
        log.info("Asset event extra for %d outlet(s): kling_task_id=%s", count, extra.get("kling_task_id"))
    return count
