"""Images going in: read from a local path or an ``ObjectStoragePath`` URI, checked before upload."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.media.storage import resolve_location

#: The upload endpoint's size limit.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Image types the upload endpoint accepts, by their leading bytes.
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, GIF or WebP from its first bytes; ``None`` otherwise."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for sig, mime in IMAGE_SIGNATURES.items() if head.startswith(sig)), None)


@dataclass(frozen=True)
class ImageFile:
    """An image ready to upload.

    :param name: the file name sent with the upload.
    :param data: the bytes.
    :param mime: ``image/jpeg``, ``image/png``, ``image/webp`` or ``image/gif``.
    :param sha256: hex digest of ``data`` (a stable digest of the input image).
    """

    name: str
    data: bytes
    mime: str
    sha256: str

    def __repr__(self) -> str:
        return f"ImageFile(name={self.name!r}, size={len(self.data)}, mime={self.mime!r}, sha256={self.sha256!r})"


def read_image(source: Any, *, field: str = "image_path", max_bytes: int = MAX_UPLOAD_BYTES) -> ImageFile:
    """Read and check one image: JPEG/PNG/WebP/GIF by magic bytes, at most ``max_bytes``.

    The size is checked before reading when the backend reports it, and the read never takes more
    than ``max_bytes + 1`` bytes either way.

    :param source: a local path, ``pathlib.Path``, ``ObjectStoragePath`` or URI (``memory://…``,
        ``file://…``, ``s3://conn_id@bucket/key``).
    :param field: the parameter name used in errors.
    :param max_bytes: the size limit.
    :raises KlingValidationError: missing, too large, not an accepted image type, or bad location.
    """
    location = resolve_location(source, field)
    shown = f"{field}={location.uri!r}"
    try:
        size = location.size()
    except FileNotFoundError:
        raise KlingValidationError(f"{shown}: no such file") from None
    except OSError as err:
        raise KlingValidationError(f"{shown}: cannot be read ({type(err).__name__}: {err})") from None
    limit = f"the upload limit is {max_bytes // (1024 * 1024)} MB"
    if size is not None and size > max_bytes:
        raise KlingValidationError(f"{shown}: {size} bytes; {limit}")
    try:
        with location.open_read() as file:
            data = file.read(max_bytes + 1)
    except OSError as err:
        raise KlingValidationError(f"{shown}: cannot be read ({type(err).__name__}: {err})") from None
    if len(data) > max_bytes:
        raise KlingValidationError(f"{shown}: more than {max_bytes} bytes; {limit}")
    mime = sniff_image_type(data[:16])
    if mime is None:
        guessed = mimetypes.guess_type(location.name)[0]
        raise KlingValidationError(
            f"{shown}: not a JPEG, PNG, WebP or GIF image (looks like {guessed or 'unknown'}); "
            "allowed: JPEG, PNG, WebP, GIF"
        )
    return ImageFile(location.name, data, mime, hashlib.sha256(data).hexdigest())
