"""OpenLineage datasets of a generation: the input images and the stored video.

The naming follows OpenLineage's conventions: ``s3://bucket`` / ``key`` for object stores (the
Airflow ``conn_id@`` is not part of the data's name), ``file`` / absolute path for local files,
``https://host`` / path for URLs. :func:`datasets` is pure; ``operator_lineage`` builds the
provider's ``OperatorLineage`` and returns ``None`` when apache-airflow-providers-openlineage is
not installed (the ``openlineage`` extra), so nothing depends on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: (namespace, name) of a dataset.
DatasetName = tuple[str, str]


def dataset_name(location: Any) -> DatasetName:
    """The OpenLineage (namespace, name) of a local path, ``ObjectStoragePath``, URI or URL."""
    text = (
        str(location) if not isinstance(location, os.PathLike) or hasattr(location, "protocol") else os.fspath(location)
    )
    parts = urlsplit(text)
    scheme = parts.scheme.lower() if "://" in text else ""
    if not scheme or scheme in ("file", "local"):
        path = parts.path if scheme else text
        return "file", str(Path(path).absolute())
    host = parts.netloc.rsplit("@", 1)[-1]  # drop Airflow's conn_id@
    if scheme in ("http", "https"):
        return f"{scheme}://{host}", parts.path or "/"
    if not host:
        return scheme, parts.path
    return f"{scheme}://{host}", parts.path.lstrip("/") or "/"


def datasets(images: Iterable[Any], result: Mapping[str, Any] | None) -> tuple[list[DatasetName], list[DatasetName]]:
    """Inputs (the images: paths or URLs) and outputs (the stored video, else the video URL).

    :param images: ``image_paths`` or ``image_urls`` as rendered.
    :param result: the task's result dict (``None`` when the task did not finish).
    """
    inputs = [dataset_name(image) for image in images or ()]
    outputs: list[DatasetName] = []
    if result:
        where = result.get("output_path") or result.get("video_url")
        if where:
            outputs.append(dataset_name(where))
    return inputs, outputs


def operator_lineage(inputs: list[DatasetName], outputs: list[DatasetName]) -> Any:
    """The provider's ``OperatorLineage``, or ``None`` when the OpenLineage provider is absent."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        return None
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
    )
