"""Media in and out: image inputs, video outputs, and where they are stored."""

from __future__ import annotations

from airflow_provider_kling.media.images import MAX_UPLOAD_BYTES, ImageFile, read_image, sniff_image_type
from airflow_provider_kling.media.mp4 import CorruptVideoError, check_mp4
from airflow_provider_kling.media.storage import Location, resolve_location
from airflow_provider_kling.media.video import StoredVideo

__all__ = [
    "MAX_UPLOAD_BYTES",
    "CorruptVideoError",
    "ImageFile",
    "Location",
    "StoredVideo",
    "check_mp4",
    "read_image",
    "resolve_location",
    "sniff_image_type",
]
