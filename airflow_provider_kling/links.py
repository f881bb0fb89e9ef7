"""Extra link from a task instance to its generated video."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key holding the video URL once the generation completed.
VIDEO_URL_XCOM_KEY = "kling_video_url"


class KlingVideoLink(BaseOperatorLink):
    """Opens the finished video (empty until the generation completed; the URL expires after 24 h)."""

    name = "Kling video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=VIDEO_URL_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""
