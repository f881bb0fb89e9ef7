"""A structural check of an MP4 file's top-level boxes (no decoding, reads only box headers)."""

from __future__ import annotations

import os
import struct
from typing import BinaryIO


class CorruptVideoError(ValueError):
    """The file is not a complete MP4: it must not be published."""


def check_mp4(path: str | os.PathLike[str]) -> None:
    """Check that the top-level boxes of ``path`` make a complete MP4.

    The first box is ``ftyp``, a ``moov`` box is present, and the box sizes add up exactly to the
    file's size. A 64-bit size (``size == 1``) and a last box that runs to the end of the file
    (``size == 0``) are understood.

    :param path: a local file.
    :raises CorruptVideoError: what is wrong, with the offset.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        kinds = list(_boxes(file, size))
    if not kinds or kinds[0] != b"ftyp":
        raise CorruptVideoError(f"not an MP4: the file does not start with an ftyp box ({size} bytes)")
    if b"moov" not in kinds:
        raise CorruptVideoError(f"incomplete MP4: no moov box in {size} bytes")


def _boxes(file: BinaryIO, size: int) -> list[bytes]:
    kinds: list[bytes] = []
    offset = 0
    while offset < size:
        file.seek(offset)
        header = file.read(8)
        if len(header) < 8:
            raise CorruptVideoError(f"truncated MP4: a box header at offset {offset} is cut off ({size} bytes)")
        box_size, kind = struct.unpack(">I4s", header)
        header_size = 8
        if box_size == 1:
            large = file.read(8)
            if len(large) < 8:
                raise CorruptVideoError(f"truncated MP4: a 64-bit box size at offset {offset} is cut off")
            box_size = struct.unpack(">Q", large)[0]
            header_size = 16
        elif box_size == 0:
            box_size = size - offset
        if box_size < header_size:
            raise CorruptVideoError(f"corrupt MP4: box {kind!r} at offset {offset} has size {box_size}")
        if offset + box_size > size:
            raise CorruptVideoError(
                f"truncated MP4: box {kind!r} at offset {offset} needs {box_size} bytes, "
                f"the file ends after {size - offset}"
            )
        kinds.append(kind)
        offset += box_size
    return kinds
