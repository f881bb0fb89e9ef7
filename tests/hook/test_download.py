"""download_video against the simulator's file-host faults and a loopback file host: it tells the truth."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingRateLimitError,
    KlingValidationError,
    KlingVideoExpiredError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.media import StoredVideo
from airflow_provider_kling.models import KlingVideoRequest
from tests.conftest import TEST_API_KEY, wait_terminal

ASSET = Path(__file__).resolve().parents[2] / "airflow_provider_kling" / "simulator" / "assets" / "sample.mp4"
ASSET_BYTES = ASSET.read_bytes()
ASSET_SHA = hashlib.sha256(ASSET_BYTES).hexdigest()
#: Quick retries: four attempts in all, millisecond backoff, a generous deadline.
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def hook(sim):
    h = KlingHook()
    yield h
    h.close()


@pytest.fixture
def video(sim, hook):
    """A finished generation on the simulator (its result URL is on the simulator's file route)."""
    sim.set_config(queued_seconds=0.05, total_seconds=0.2)
    task = hook.submit_video(KlingVideoRequest.from_kwargs(prompt="a heron at dawn"), f"kl_{uuid.uuid4().hex[:8]}")
    return wait_terminal(hook, task.id)


def file_requests(sim):
    return [r for r in sim.requests() if r["path"].startswith("/files/videos/")]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_gzip_answer_is_decoded_not_called_truncated(sim, hook, video, tmp_path):
    sim.add_fault(fault="gzip", endpoint="files", count=1)
    stored = hook.download_video(video, tmp_path / "v.mp4", policy=FAST)
    assert (tmp_path / "v.mp4").read_bytes() == ASSET_BYTES
    assert stored == StoredVideo(str(tmp_path / "v.mp4"), len(ASSET_BYTES), ASSET_SHA)
    assert len(file_requests(sim)) == 1  # no retry


def test_truncated_mp4_with_matching_length_is_retried_then_fails(sim, hook, video, tmp_path):
    sim.add_fault(fault="truncated_video", endpoint="files", count=-1)
    with pytest.raises(KlingAPIError, match="truncated MP4") as info:
        hook.download_video(video, tmp_path / "out" / "v.mp4", policy=FAST)
    assert not isinstance(info.value, KlingVideoExpiredError)
    assert len(file_requests(sim)) == 4  # bounded
    assert leftovers(tmp_path / "out") == []  # nothing published, no partial file


def test_truncated_once_then_complete(sim, hook, video, tmp_path):
    sim.add_fault(fault="truncated_video", endpoint="files", count=1)
    stored = hook.download_video(video, tmp_path / "v.mp4", policy=FAST)
    assert stored.sha256 == ASSET_SHA and len(file_requests(sim)) == 2
    assert leftovers(tmp_path) == ["v.mp4"]


def test_body_shorter_than_content_length_is_retried_then_fails(sim, hook, video, tmp_path):
    sim.add_fault(fault="short_body", endpoint="files", count=-1)
    with pytest.raises(KlingAPIError):
        hook.download_video(video, tmp_path / "v.mp4", policy=FAST)
    assert len(file_requests(sim)) == 4
    assert leftovers(tmp_path) == []


def test_short_body_once_then_complete(sim, hook, video, tmp_path):
    sim.add_fault(fault="short_body", endpoint="files", count=1)
    assert hook.download_video(video, tmp_path / "v.mp4", policy=FAST).sha256 == ASSET_SHA


@pytest.mark.parametrize(("fault", "status"), [("expired_403", 403), ("gone_410", 410)])
def test_expired_url_is_video_expired_not_auth(sim, hook, video, tmp_path, fault, status):
    sim.add_fault(fault=fault, endpoint="files", count=1)
    with pytest.raises(KlingVideoExpiredError, match="video URL expired or not accessible") as info:
        hook.download_video(video, tmp_path / "v.mp4", policy=FAST)
    assert not isinstance(info.value, KlingAuthError)
    assert info.value.status == status and "generate again" in str(info.value)
    if status == 403:
        assert info.value.code == "AccessDenied"
    assert len(file_requests(sim)) == 1  # final: not retried
    assert leftovers(tmp_path) == []


def test_file_host_404_after_expiry_is_video_expired(sim, hook, tmp_path):
    with pytest.raises(KlingVideoExpiredError):
        hook.download_video(f"{sim.base_url}/files/videos/no_such_task.mp4", tmp_path / "v.mp4", policy=FAST)


def test_file_host_429_honours_retry_after_without_pausing_the_key(sim, hook, video, tmp_path):
    sim.add_fault(fault="rate_limit", endpoint="files", count=1, retry_after=1)
    assert hook.download_video(video, tmp_path / "v.mp4", policy=FAST).sha256 == ASSET_SHA
    assert len(file_requests(sim)) == 2
    sim.add_fault(fault="rate_limit", endpoint="files", count=1, retry_after=60)
    with pytest.raises(KlingRateLimitError):  # 60 s does not fit the deadline: no wait, no budget pause
        hook.download_video(video, tmp_path / "w.mp4", policy=RetryPolicy(deadline=time.time() + 5))
    assert hook.settings.budgets.query.paused_for() == hook.settings.budgets.submit.paused_for() == 0
    assert not (tmp_path / "w.mp4").exists()


def test_memory_destination_has_size_and_digest(sim, hook, video):
    uri = f"memory://kling-test/{uuid.uuid4().hex}/videos/a.mp4"
    stored = hook.download_video(video, uri, policy=FAST)
    assert stored == StoredVideo(uri, len(ASSET_BYTES), ASSET_SHA)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(uri) == ASSET_BYTES
    assert stored.read_bytes() == ASSET_BYTES and str(stored) == uri


def test_file_uri_destination_has_size_and_digest(sim, hook, video, tmp_path):
    uri = f"file://{tmp_path}/clips/a.mp4"
    stored = hook.download_video(video, uri, policy=FAST)
    assert stored.output_path == uri and stored.size_bytes == len(ASSET_BYTES) and stored.sha256 == ASSET_SHA
    assert (tmp_path / "clips" / "a.mp4").read_bytes() == ASSET_BYTES
    assert leftovers(tmp_path / "clips") == ["a.mp4"]


def test_object_storage_path_destination(sim, hook, video, tmp_path):
    from airflow.sdk import ObjectStoragePath

    # protocol= spelled out: Airflow 3.0's ObjectStoragePath refuses a bare URI under universal-pathlib 0.3.
    stored = hook.download_video(video, ObjectStoragePath(f"file://{tmp_path}/osp.mp4", protocol="file"), policy=FAST)
    assert (tmp_path / "osp.mp4").read_bytes() == ASSET_BYTES and stored.sha256 == ASSET_SHA


def test_failed_download_leaves_nothing_in_memory_store(sim, hook, video):
    uri = f"memory://kling-test/{uuid.uuid4().hex}/a.mp4"
    sim.add_fault(fault="truncated_video", endpoint="files", count=-1)
    with pytest.raises(KlingAPIError):
        hook.download_video(video, uri, policy=FAST)
    assert not fsspec.filesystem("memory").exists(uri)


@pytest.mark.parametrize(
    "destination",
    ["s3://my-bucket/videos/a.mp4", "s3://aws_default@my-bucket/videos/a.mp4", "nope://bucket/a.mp4"],
)
def test_url_like_string_never_creates_a_local_file(sim, hook, video, tmp_path, monkeypatch, destination):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KlingValidationError, match="output_path=") as info:
        hook.download_video(video, destination, policy=FAST)
    assert destination in str(info.value)
    assert leftovers(tmp_path) == []
    assert file_requests(sim) == []  # checked before any request


class _FileHost(http.server.BaseHTTPRequestHandler):
    """A loopback file host: records request headers, answers as ``self.server.mode`` says."""

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers.items()))  # type: ignore[attr-defined]
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "forbidden":
            body, status, extra = b"<Error><Code>AccessDenied</Code></Error>", 403, {}
        elif mode == "brotli":
            body, status, extra = ASSET_BYTES, 200, {"Content-Encoding": "br"}
        else:
            body, status, extra = ASSET_BYTES, 200, {}
        self.send_response(status)
        for name, value in {"Content-Type": "video/mp4", "Content-Length": str(len(body)), **extra}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_host():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileHost)
    server.seen, server.mode = [], "ok"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_key_never_reaches_the_file_host_and_identity_is_asked(sim, hook, file_host, tmp_path):
    url = f"http://127.0.0.1:{file_host.server_address[1]}/v.mp4"
    hook.get_balance()  # the session has talked to the API with the key first
    assert hook.download_video(url, tmp_path / "v.mp4", policy=FAST).sha256 == ASSET_SHA
    file_host.mode = "forbidden"
    with pytest.raises(KlingVideoExpiredError):
        hook.download_video(url, tmp_path / "w.mp4", policy=FAST)
    assert len(file_host.seen) == 2
    for headers in file_host.seen:
        assert "Authorization" not in headers
        assert not any(TEST_API_KEY in value for value in headers.values())
        assert headers.get("Accept-Encoding") == "identity"


def test_unasked_encoding_is_refused_and_not_published(sim, hook, file_host, tmp_path):
    file_host.mode = "brotli"
    url = f"http://127.0.0.1:{file_host.server_address[1]}/v.mp4"
    with pytest.raises(KlingAPIError, match="Content-Encoding 'br'") as info:
        hook.download_video(url, tmp_path / "v.mp4", policy=FAST)
    assert info.value.code == "unsupported_encoding"
    assert leftovers(tmp_path) == []
