"""Extra link from a task instance to its stored video, else to the generated video's URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key holding the video URL once the generation completed.
VIDEO_URL_XCOM_KEY = "kling_video_url"
#: XCom key holding where the video was stored (``output_path``), when it was.
OUTPUT_PATH_XCOM_KEY = "kling_output_path"


def stored_link(output_path: str) -> str:
    """A link for a stored video: ``file://`` for local paths; URIs without Airflow's ``conn_id@``."""
    parts = urlsplit(output_path)
    if "://" not in output_path or not parts.scheme:
        return Path(os.path.abspath(output_path)).as_uri()
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class KlingVideoLink(BaseOperatorLink):
    """Opens the stored video when the task stored one (``output_path``), else the video URL (empty
    until the generation completed; the URL expires after 24 h)."""

    name = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        stored = XCom.get_value(key=OUTPUT_PATH_XCOM_KEY, ti_key=ti_key)
        if isinstance(stored, str) and stored:
            return stored_link(stored)
        url = XCom.get_value(key=VIDEO_URL_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""
