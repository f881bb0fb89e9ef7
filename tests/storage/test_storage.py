"""The media layer: MP4 structure check, locations, images read from any storage, uploads from memory://."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

import fsspec
import pytest

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.media import CorruptVideoError, check_mp4, read_image, resolve_location

REPO = Path(__file__).resolve().parents[2]
ASSET = REPO / "airflow_provider_kling" / "simulator" / "assets" / "sample.mp4"
PNG = REPO / "example_dags" / "assets" / "first_frame.png"


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.mp4"
    path.write_bytes(data)
    return path


# -- MP4 ------------------------------------------------------------------------------------


def test_sample_video_passes():
    check_mp4(ASSET)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (ASSET.read_bytes()[:1476], "truncated MP4"),  # cut inside mdat, as a short download is
        (ASSET.read_bytes()[:36], "truncated MP4"),  # cut inside moov's header
        (box(b"ftyp", b"isom") + box(b"mdat", b"x" * 10), "no moov"),
        (box(b"moov") + box(b"ftyp", b"isom"), "does not start with an ftyp"),
        (box(b"ftyp", b"isom") + box(b"moov") + b"\x00\x00\x00\x04free", "has size 4"),
        (b"<html>403</html>", "truncated MP4"),
        (b"", "does not start with an ftyp"),
    ],
)
def test_incomplete_or_corrupt_video_is_refused(tmp_path, data, problem):
    with pytest.raises(CorruptVideoError, match=problem):
        check_mp4(write(tmp_path, data))


def test_64_bit_and_to_end_of_file_box_sizes(tmp_path):
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 5) + b"12345"
    check_mp4(write(tmp_path, box(b"ftyp", b"isom") + box(b"moov") + large))
    to_end = struct.pack(">I4s", 0, b"mdat") + b"anything"
    check_mp4(write(tmp_path, box(b"ftyp", b"isom") + box(b"moov") + to_end))
    wrong_large = struct.pack(">I4sQ", 1, b"mdat", 16 + 6) + b"12345"
    with pytest.raises(CorruptVideoError, match="truncated"):
        check_mp4(write(tmp_path, box(b"ftyp", b"isom") + box(b"moov") + wrong_large))


def test_trailing_garbage_is_refused(tmp_path):
    with pytest.raises(CorruptVideoError):
        check_mp4(write(tmp_path, ASSET.read_bytes() + b"\x00\x00"))


# -- locations ----------------------------------------------------------------------------


def test_local_paths_and_file_uris(tmp_path):
    assert resolve_location(str(tmp_path / "a.mp4"), "output_path").local == tmp_path / "a.mp4"
    assert resolve_location(tmp_path / "a.mp4", "output_path").local == tmp_path / "a.mp4"
    file_uri = resolve_location(f"file://{tmp_path}/a.mp4", "output_path")
    assert file_uri.local == tmp_path / "a.mp4" and file_uri.uri == f"file://{tmp_path}/a.mp4"


def test_memory_uri_is_an_object_store_not_a_local_path():
    location = resolve_location("memory://bucket/key/a.mp4", "output_path")
    assert location.local is None and location.path.endswith("bucket/key/a.mp4")


@pytest.mark.parametrize("value", ["s3://conn@bucket/a.mp4", "gs://bucket/a.mp4", "weird+x://b/a.mp4", "", None, 3])
def test_unusable_locations_name_the_field(value):
    with pytest.raises(KlingValidationError, match="output_path="):
        resolve_location(value, "output_path")


# -- images -------------------------------------------------------------------------------


def memory_uri(name: str) -> str:
    return f"memory://kling-test/{uuid.uuid4().hex}/{name}"


def test_image_from_memory_uri():
    uri = memory_uri("frame.png")
    data = PNG.read_bytes()
    fsspec.filesystem("memory").pipe_file(uri, data)
    image = read_image(uri)
    assert (image.name, image.data, image.mime) == ("frame.png", data, "image/png")
    assert image.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a", "image/gif"),
    ],
)
def test_image_types_by_magic_bytes(head, mime):
    uri = memory_uri("x.bin")
    fsspec.filesystem("memory").pipe_file(uri, head + b"0" * 32)
    assert read_image(uri).mime == mime


def test_image_checks_name_the_field_value_and_rule():
    fs = fsspec.filesystem("memory")
    big, text = memory_uri("big.png"), memory_uri("notes.txt")
    fs.pipe_file(big, b"\x89PNG\r\n\x1a\n" + b"0" * (10 * 1024 * 1024))
    fs.pipe_file(text, b"hello")
    with pytest.raises(KlingValidationError, match=r"image_path='memory://.*big\.png'.*upload limit is 10 MB"):
        read_image(big)
    with pytest.raises(KlingValidationError, match=r"notes\.txt'.*not a JPEG, PNG, WebP or GIF.*text/plain"):
        read_image(text)
    with pytest.raises(KlingValidationError, match="no such file"):
        read_image(memory_uri("missing.png"))


def test_upload_image_from_memory_uri(sim):
    uri = memory_uri("first.png")
    fsspec.filesystem("memory").pipe_file(uri, PNG.read_bytes())
    hook = KlingHook()
    try:
        url = hook.upload_image(uri)
        assert url.startswith(sim.base_url) and url.endswith(".png")
        assert hook._http.get(url, timeout=10).content == PNG.read_bytes()
    finally:
        hook.close()
    assert sim.stats()["requests"]["upload"] == 1


def test_upload_image_url_like_bad_scheme_sends_nothing(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hook = KlingHook()
    try:
        with pytest.raises(KlingValidationError, match=r"image_path='s3://conn@bucket/a\.png'"):
            hook.upload_image("s3://conn@bucket/a.png")
    finally:
        hook.close()
    assert sim.stats()["requests"]["total"] == 0
