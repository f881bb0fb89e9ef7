"""Where files live: local paths and ``ObjectStoragePath`` URIs, resolved before any request.

A string with a scheme (``s3://aws_default@bucket/key``, ``memory://…``, ``file://…``) is never a
local path. Schemes Airflow has a filesystem for (``file``, and those of installed providers) go
through :class:`airflow.sdk.ObjectStoragePath`, so ``conn_id@`` picks the connection; other schemes
fsspec implements without extra packages (``memory``) go through fsspec directly.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_kling.exceptions import KlingValidationError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_LOCAL_PROTOCOLS = ("file", "local")


@dataclass(frozen=True)
class Location:
    """A resolved file location.

    :param uri: the location as reported back (``output_path`` in results).
    :param local: the local path, for ``file://`` and plain paths; ``None`` otherwise.
    :param fs: the fsspec filesystem of a non-local location.
    :param path: the path inside ``fs``.
    """

    uri: str
    local: Path | None = None
    fs: Any = None
    path: str = ""

    def size(self) -> int | None:
        """The size in bytes; ``None`` when the backend does not say. Raises ``FileNotFoundError``."""
        if self.local is not None:
            if not self.local.is_file():
                raise FileNotFoundError(self.uri)
            return self.local.stat().st_size
        if not self.fs.isfile(self.path):
            raise FileNotFoundError(self.uri)
        size = self.fs.size(self.path)
        return None if size is None else int(size)

    def open_read(self) -> BinaryIO:
        """Open for reading bytes."""
        if self.local is not None:
            return self.local.open("rb")
        return self.fs.open(self.path, "rb")  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        """The last path component."""
        return self.local.name if self.local is not None else self.path.rstrip("/").rsplit("/", 1)[-1]


def resolve_location(value: Any, field: str) -> Location:
    """Resolve a local path, ``pathlib.Path``, ``ObjectStoragePath`` or URI string, without I/O.

    :param value: what the DAG author wrote.
    :param field: the parameter name for errors (``output_path``, ``image_path``).
    :raises KlingValidationError: empty, not a path, unknown scheme, or no filesystem for it.
    """
    if hasattr(value, "protocol") and hasattr(value, "fs"):  # ObjectStoragePath / UPath
        return _from_object_path(value, field)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes) or not isinstance(value, str) or not value.strip():
        raise KlingValidationError(f"{field}={value!r}: expected a local path or a URI such as s3://conn_id@bucket/key")
    match = _SCHEME.match(value)
    if match is None:
        local = Path(value).expanduser()  # "~/videos/a.mp4" is the worker's home, not a folder named "~"
        return Location(str(local), local=local)
    scheme = match.group(1).lower()
    if scheme in _LOCAL_PROTOCOLS or _airflow_has_fs(scheme):
        from airflow_provider_kling.compat import object_storage_path

        return _from_object_path(object_storage_path(value, scheme), field)
    netloc = value[match.end() :].split("/", 1)[0]
    if "@" in netloc:
        raise KlingValidationError(
            f"{field}={value!r}: Airflow has no filesystem for {scheme}:// (install the provider that "
            "registers it, e.g. apache-airflow-providers-amazon for s3://)"
        )
    return _from_fsspec(value, scheme, field)


def output_file(value: Any, field: str, *, look: bool = True) -> Location:
    """:func:`resolve_location` of a file to write: never a folder (a trailing ``/``, or with
    ``look`` an existing local directory), which would fail only after the download.

    :raises KlingValidationError: as :func:`resolve_location`, or a folder (the message suggests a
        file name).
    """
    location = resolve_location(value, field)
    text = str(value)
    if text.endswith(("/", os.sep)) or (look and location.local is not None and location.local.is_dir()):
        folder = text.rstrip("/" + os.sep)
        raise KlingValidationError(
            f"{field}={text!r} is a folder: give the file to write, e.g. "
            f"{folder}/{{{{ ti.task_id }}}}_{{{{ ti.map_index }}}}.mp4"
        )
    return location


def _airflow_has_fs(scheme: str) -> bool:
    from airflow_provider_kling.compat import has_fs

    return has_fs(scheme)


def _from_object_path(path: Any, field: str) -> Location:
    uri = str(path)
    protocol = str(path.protocol or "file").lower()
    if protocol in _LOCAL_PROTOCOLS:
        return Location(uri, local=Path(path.path))
    try:
        fs = path.fs
    except (ValueError, ImportError):  # an ObjectStoragePath of a scheme Airflow does not register
        return _from_fsspec(uri, protocol, field)
    return Location(uri, fs=fs, path=str(path.path))


def _from_fsspec(uri: str, scheme: str, field: str) -> Location:
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as err:
        raise KlingValidationError(
            f"{field}={uri!r}: no filesystem for {scheme}:// ({err}); use a local path, file://, memory:// "
            "or a scheme of an installed Airflow provider (s3://conn_id@bucket/key, gs://…)"
        ) from None
    return Location(uri, fs=fs, path=path)


def staging_dir(location: Location) -> Path:
    """Where to write a file before publishing it: beside a local target (same filesystem), else tmp."""
    if location.local is not None:
        parent = location.local.parent
        parent.mkdir(parents=True, exist_ok=True)
        return parent
    import tempfile

    return Path(tempfile.gettempdir())


def publish(staged: Path, location: Location) -> None:
    """Move a verified local file to ``location``; nothing is left there when this fails.

    Local targets are renamed into place (atomic on one filesystem). Object stores get one upload of
    the finished file: a PUT (or a completed multipart upload) makes the object appear whole or not
    at all, so no temporary key is needed; a partial object some other backend leaves is removed.

    :param staged: the verified file (removed or moved by this call only on success).
    :param location: the target.
    """
    if location.local is not None:
        os.chmod(staged, 0o644)
        os.replace(staged, location.local)
        return
    fs = location.fs
    parent = location.path.rsplit("/", 1)[0]
    try:
        if parent and parent != location.path:
            fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(staged), location.path)
    except BaseException:
        _remove_quietly(fs, location.path)
        raise


def _remove_quietly(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception:  # best-effort cleanup; the original error is what matters
        pass


def staged_file(location: Location) -> Path:
    """A new empty temporary file for ``location`` (hidden, random name)."""
    name = location.name or "download"
    directory = staging_dir(location)
    path = directory / f".{name}.{secrets.token_hex(6)}.part"
    path.touch(mode=0o600, exist_ok=False)
    return path
