"""Unit tests of the pieces around stored media: the budget guard against a loopback stub, asset
extra, OpenLineage dataset names (without the OpenLineage provider), and the extra link's target."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_kling.assets import asset_extra
from airflow_provider_kling.exceptions import KlingInsufficientCreditsError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.idempotency import check_balance
from airflow_provider_kling.lineage import dataset_name, datasets, operator_lineage
from airflow_provider_kling.links import stored_link
from airflow_provider_kling.models import KlingVideoRequest
from tests.conftest import connection_uri


@pytest.fixture
def balance_stub(monkeypatch):
    """A loopback balance endpoint answering whatever ``stub.body`` holds; counts its requests."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            server.hits += 1
            data = json.dumps(server.body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.hits, server.body = 0, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(f"http://127.0.0.1:{server.server_port}"))
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_unlimited_quota_passes_any_minimum(balance_stub):
    balance_stub.body = {"success": True, "unlimited_quota": True, "remain_credits": 0}
    hook = KlingHook()
    try:
        check_balance(hook, 10**12)
    finally:
        hook.close()
    assert balance_stub.hits == 1


def test_below_minimum_names_both_numbers(balance_stub):
    balance_stub.body = {"success": True, "unlimited_quota": False, "remain_credits": 250.5}
    hook = KlingHook()
    try:
        with pytest.raises(
            KlingInsufficientCreditsError, match=r"balance 250.5 credits is below min_balance_credits=300"
        ):
            check_balance(hook, 300)
        check_balance(hook, 250.5)  # exactly the minimum is enough
    finally:
        hook.close()


def test_balance_without_credits_is_refused(balance_stub):
    balance_stub.body = {"success": True}
    hook = KlingHook()
    try:
        with pytest.raises(KlingInsufficientCreditsError, match="no usable remain_credits"):
            check_balance(hook, 1)
    finally:
        hook.close()


def test_asset_extra_with_and_without_request():
    result = {
        "id": "video_1",
        "client_business_id": "kl_x",
        "model": "kling-v3",
        "video_url": "https://cdn/v.mp4",
        "expires_at": "2026-01-02T00:00:00Z",
        "output_path": "memory://b/v.mp4",
        "size_bytes": 10,
        "sha256": "ab",
    }
    request = KlingVideoRequest.from_kwargs(prompt="héron", mode="pro", duration=10, audio=True)
    extra = asset_extra(result, request)
    assert extra["mode"] == "pro" and extra["duration"] == 10 and extra["aspect_ratio"] == "16:9"
    assert (
        extra["audio"] is True and extra["prompt_sha256"] == __import__("hashlib").sha256("héron".encode()).hexdigest()
    )
    assert extra["output_path"] == "memory://b/v.mp4" and extra["size_bytes"] == 10 and extra["sha256"] == "ab"
    bare = asset_extra({k: v for k, v in result.items() if k not in ("output_path", "size_bytes", "sha256")})
    assert set(bare) == {"kling_task_id", "client_business_id", "model", "video_url", "expires_at"}
    json.dumps(extra)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://aws_default@bucket/videos/a.mp4", ("s3://bucket", "videos/a.mp4")),
        ("gs://bucket/a.png", ("gs://bucket", "a.png")),
        ("memory://frames/a.png", ("memory://frames", "a.png")),
        ("file:///data/a.png", ("file", "/data/a.png")),
        ("/data/a.png", ("file", "/data/a.png")),
        ("https://cdn.example.com/v/a.mp4", ("https://cdn.example.com", "/v/a.mp4")),
    ],
)
def test_lineage_dataset_names(location, expected):
    assert dataset_name(location) == expected


def test_lineage_inputs_and_outputs_without_the_provider():
    inputs, outputs = datasets(["memory://f/a.png"], {"video_url": "https://cdn/x.mp4", "output_path": "s3://c@b/k"})
    assert inputs == [("memory://f", "a.png")] and outputs == [("s3://b", "k")]
    assert datasets([], {"video_url": "https://cdn/x.mp4"})[1] == [("https://cdn", "/x.mp4")]
    assert datasets([], None) == ([], [])


def test_operator_lineage_is_none_without_openlineage():
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        assert operator_lineage([("file", "/a")], []) is None
    else:  # pragma: no cover - with the extra installed
        assert operator_lineage([("file", "/a")], []).inputs[0].name == "/a"


def test_stored_link():
    assert stored_link("s3://aws_default@bucket/k.mp4") == "s3://bucket/k.mp4"
    assert stored_link("/tmp/v.mp4") == "file:///tmp/v.mp4"
    assert stored_link("file:///tmp/v.mp4") == "file:///tmp/v.mp4"
