"""Differences between the supported Airflow and common-compat versions, in one place.

The provider supports Apache Airflow 3.0 to 3.3 on Python 3.10 to 3.13. Most Airflow symbols come
from ``airflow.providers.common.compat.sdk``, which hides moves between Airflow releases. This
module covers what common-compat itself does not have in every version the range installs:

* ``has_fs`` (is an fsspec filesystem registered for a scheme) moved from ``airflow.io`` (3.0) to
  ``airflow.sdk.io.fs``.
* ``mask_secret`` is exported by common-compat only from 1.22.0, and common-compat 1.21.0+ needs
  Python 3.11, so on Python 3.10 (common-compat <= 1.20.0) it is imported from the task SDK.
* ``TaskDeferralTimeout`` moved from ``airflow.exceptions`` (3.0) to ``airflow.sdk.exceptions``.
* :func:`object_storage_path`: Airflow 3.0's ``ObjectStoragePath`` predates universal-pathlib 0.3,
  which ``apache-airflow-core==3.0.0`` allows; with it, ``ObjectStoragePath("file:///x")`` raises
  "detected protocol file which is incompatible with ObjectStoragePath" for every scheme unless the
  protocol is passed explicitly.
* ``get_async_connection`` / ``get_async_extra_dejson``: common-compat 1.23.0 (Python 3.11+) is the
  first release that avoids ``DeadlockImminentError`` from ``BaseHook.aget_connection`` and
  ``Connection.extra_dejson`` on an event loop before Airflow 3.3.2, and the first to have both.
  Older releases get the same logic from here: Airflow 3.0 has no ``aget_connection`` at all, so
  the synchronous lookup runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import TYPE_CHECKING, Any

from packaging.version import Version

if TYPE_CHECKING:
    from airflow.sdk import BaseHook, Connection

log = logging.getLogger(__name__)

try:  # Airflow 3.3 (not in 3.0)
    from airflow.sdk.io.fs import has_fs
except ImportError:  # Airflow 3.0
    from airflow.io import has_fs  # type: ignore[attr-defined,no-redef]

try:  # Airflow 3.1+
    from airflow.sdk.exceptions import TaskDeferralTimeout
except ImportError:  # Airflow 3.0
    from airflow.exceptions import TaskDeferralTimeout  # type: ignore[attr-defined,no-redef]


def object_storage_path(uri: str, scheme: str) -> Any:
    """``ObjectStoragePath(uri)`` on every supported Airflow and universal-pathlib.

    :param uri: the URI, e.g. ``file:///tmp/a.mp4`` or ``s3://aws_default@bucket/key``.
    :param scheme: its scheme (lower case), passed as ``protocol`` when the plain call is refused.
    :return: the ``ObjectStoragePath``.
    """
    from airflow.sdk import ObjectStoragePath

    try:
        return ObjectStoragePath(uri)
    except TypeError as err:  # Airflow 3.0 with universal-pathlib >= 0.3
        if "incompatible with ObjectStoragePath" not in str(err):
            raise
        return ObjectStoragePath(uri, protocol=scheme)


def _installed_version(distribution: str) -> Version:
    try:
        return Version(Version(distribution_version(distribution)).base_version)
    except PackageNotFoundError:  # pragma: no cover - both are dependencies of this provider
        return Version("0")


AIRFLOW_VERSION = _installed_version("apache-airflow-core")
#: Airflow 3.1 added ``BaseHook.aget_connection``; ``airflow dags test`` parses the file itself.
AIRFLOW_V_3_1_PLUS = Version("3.1.0") <= AIRFLOW_VERSION
#: Airflow 3.2 reads ``conn-fields`` / ``ui-field-behaviour`` from the provider info (no hook import).
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= AIRFLOW_VERSION

try:  # common-compat >= 1.22.0
    from airflow.providers.common.compat.sdk import mask_secret
except ImportError:
    try:  # Airflow 3.3 (not in 3.0)
        from airflow.sdk.log import mask_secret
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]


#: True when common-compat's async connection helpers are safe on every supported Airflow.
UPSTREAM_ASYNC_CONNECTION = _installed_version("apache-airflow-providers-common-compat") >= Version("1.23.0")


def _aget_connection_is_unsafe(hook: BaseHook | type[BaseHook]) -> bool:
    """Whether ``hook.aget_connection`` is missing or is the base one of an Airflow before 3.3.2.

    The base ``aget_connection`` (Airflow 3.1 to 3.3.1) masks secrets with a synchronous call to
    the supervisor; ``Connection.aextra_dejson`` came with the asynchronous masking in 3.3.2.
    """
    from airflow.providers.common.compat.sdk import BaseHook as _BaseHook
    from airflow.sdk import Connection as _Connection

    own = getattr(hook, "aget_connection", None)
    if own is None:
        return True
    if hasattr(_Connection, "aextra_dejson"):
        return False
    base = getattr(_BaseHook, "aget_connection", None)
    hook_class = hook if isinstance(hook, type) else type(hook)
    return base is not None and getattr(hook_class.aget_connection, "__func__", None) is getattr(
        base, "__func__", object()
    )


async def get_async_connection(conn_id: str, hook: BaseHook | type[BaseHook] | None = None) -> Connection:
    """Look a connection up from a coroutine without blocking the event loop, on every Airflow 3.x.

    :param conn_id: the connection id.
    :param hook: the hook (class or instance) whose ``get_connection`` / ``aget_connection`` to
        use, so a subclass override is honoured; default ``BaseHook``.
    :return: the connection.
    """
    if UPSTREAM_ASYNC_CONNECTION:
        from airflow.providers.common.compat.connection import get_async_connection as upstream

        return await upstream(conn_id, hook=hook)
    from airflow.providers.common.compat.sdk import BaseHook as _BaseHook

    target = hook or _BaseHook
    if not _aget_connection_is_unsafe(target):
        return await target.aget_connection(conn_id=conn_id)  # type: ignore[union-attr]
    from asgiref.sync import sync_to_async

    log.debug("Getting connection %s with get_connection() in a worker thread.", conn_id)
    return await sync_to_async(target.get_connection)(conn_id=conn_id)


async def get_async_extra_dejson(conn: Connection) -> dict[str, Any]:
    """The connection's extra as a dict, read from a coroutine without blocking the event loop.

    :param conn: the connection, e.g. from :func:`get_async_connection`.
    :return: the deserialised extra, secrets masked.
    """
    if UPSTREAM_ASYNC_CONNECTION:
        from airflow.providers.common.compat.connection import get_async_extra_dejson as upstream

        return await upstream(conn)
    if hasattr(conn, "aextra_dejson"):
        return await conn.aextra_dejson()
    from asgiref.sync import sync_to_async

    return await sync_to_async(lambda: conn.extra_dejson)()


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "UPSTREAM_ASYNC_CONNECTION",
    "TaskDeferralTimeout",
    "get_async_connection",
    "get_async_extra_dejson",
    "has_fs",
    "mask_secret",
    "object_storage_path",
]
