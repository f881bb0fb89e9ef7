"""Helpers shared by the example DAGs."""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Asset

from airflow_provider_kling.hooks.kling import KlingHook

ASSETS = Path(__file__).resolve().parent / "assets"
#: Seconds between status polls. 10 s suits the real API; the demo and tests set 1 for the simulator.
POLL_INTERVAL = float(os.environ.get("KLING_EXAMPLE_POLL_INTERVAL", "10"))


def output_dir() -> Path:
    """Where the examples save videos: ``$KLING_OUTPUT_DIR``, else ``./output``."""
    return Path(os.environ.get("KLING_OUTPUT_DIR", "output")).resolve()


#: The asset a stored clip updates; DAGs scheduled on it read where the clip is from the event's extra.
CLIP_ASSET = Asset("kling_clips")


def storage_root() -> str:
    """Where the storage examples keep clips: ``$KLING_STORAGE_ROOT`` (any ``ObjectStoragePath`` URI,
    e.g. ``s3://aws_default@my-bucket/kling``), else ``file://`` + :func:`output_dir`."""
    return os.environ.get("KLING_STORAGE_ROOT") or output_dir().as_uri()


def download(result: dict, name: str, conn_id: str = "kling_default") -> str:
    """Save a finished video (result dict of the sensor or generate operator) before it expires."""
    hook = KlingHook(conn_id)
    try:
        path = hook.download_video(result, output_dir() / f"{name}.mp4")
    finally:
        hook.close()
    print(f"Kling task {result['id']}: {result['video_url']} -> {path}")
    return str(path)


def upload(image: str, conn_id: str = "kling_default") -> str:
    """Upload a bundled image and return its public URL (upload right before submitting)."""
    hook = KlingHook(conn_id)
    try:
        return hook.upload_image(ASSETS / image)
    finally:
        hook.close()
