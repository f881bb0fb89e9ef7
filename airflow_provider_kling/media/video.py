"""Videos going out: decode, verify and publish a downloaded file, and what the caller gets back."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_provider_kling.media.mp4 import CorruptVideoError, check_mp4
from airflow_provider_kling.media.storage import Location, publish, resolve_location, staged_file

#: Content encodings a download can undo; anything else is refused.
DECODABLE_ENCODINGS = ("gzip", "x-gzip")


class UnsupportedEncodingError(ValueError):
    """The file host used a content encoding that was not asked for and cannot be undone here."""


@dataclass(frozen=True)
class StoredVideo:
    """A verified video at its destination.

    For code written when :meth:`KlingHook.download_video` returned a ``Path``, ``str()``,
    ``os.fspath()`` (local destinations) and :meth:`read_bytes` still work.

    :param output_path: where it is, as given (local path or URI).
    :param size_bytes: the stored size.
    :param sha256: hex SHA-256 of the stored bytes.
    """

    output_path: str
    size_bytes: int
    sha256: str

    def __str__(self) -> str:
        return self.output_path

    def __fspath__(self) -> str:
        location = resolve_location(self.output_path, "output_path")
        if location.local is None:
            raise TypeError(f"{self.output_path} is not a local path")
        return str(location.local)

    @property
    def path(self) -> Any:
        """A ``Path`` for local destinations, else an ``ObjectStoragePath``-like location."""
        location = resolve_location(self.output_path, "output_path")
        return location.local if location.local is not None else location

    def read_bytes(self) -> bytes:
        """The stored bytes (reads the whole file)."""
        with resolve_location(self.output_path, "output_path").open_read() as file:
            return file.read()

    def to_dict(self) -> dict[str, Any]:
        """``output_path``, ``size_bytes`` and ``sha256`` (the result-dict keys)."""
        return asdict(self)


def finish_download(received: Path, encoding: str | None, location: Location) -> StoredVideo:
    """Undo a gzip encoding, check the MP4, hash it and publish it to ``location``.

    :param received: the bytes as they came off the wire (deleted by this call).
    :param encoding: the response's ``Content-Encoding`` (``None``/``identity`` = none).
    :param location: the resolved destination.
    :raises CorruptVideoError: the file is not a complete MP4 (or the gzip stream is broken).
    :raises UnsupportedEncodingError: an encoding other than gzip.
    """
    staged = received
    try:
        kind = (encoding or "identity").strip().lower()
        if kind not in ("", "identity"):
            if kind not in DECODABLE_ENCODINGS:
                raise UnsupportedEncodingError(f"the file host sent Content-Encoding {encoding!r}; asked for identity")
            staged = staged_file(location)
            _gunzip(received, staged)
        check_mp4(staged)
        digest, size = _digest(staged)
        publish(staged, location)
    finally:
        for path in {received, staged}:
            if path.exists():
                path.unlink()
    return StoredVideo(location.uri, size, digest)


def _gunzip(source: Path, target: Path) -> None:
    try:
        with gzip.open(source, "rb") as packed, target.open("wb") as out:
            while chunk := packed.read(1 << 20):
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptVideoError(f"broken gzip body ({type(err).__name__}: {err})") from None


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), os.path.getsize(path)
