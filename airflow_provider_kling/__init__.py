"""Apache Airflow provider for the Kling v3 video-generation API served by ToAPIs."""

from __future__ import annotations

__version__ = "0.1.0"
