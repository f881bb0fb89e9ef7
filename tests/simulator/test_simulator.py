"""Tests of the local ToAPIs simulator itself, through raw HTTP clients (no hook, no airflow)."""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_kling.simulator import FaultSpec, SimulatorConfig, SimulatorServer
from airflow_provider_kling.simulator.__main__ import main as cli_main
from airflow_provider_kling.simulator.app import VIDEO
from airflow_provider_kling.simulator.config import parse_durations
from airflow_provider_kling.simulator.tasks import Task

KEY = "sk-sim-test-SECRET-0001"
OTHER_KEY = "sk-sim-test-SECRET-0002"
BASE = SimulatorConfig(queued_seconds=0.2, total_seconds=1.0)
REPO = Path(__file__).resolve().parents[2]
AUTH_401 = {
    "error": {
        "code": 401,
        "message": "Authentication failed, please check your API key",
        "type": "authentication_error",
    }
}
NOT_FOUND = {"error": {"code": 404, "message": "Task not found", "type": "not_found_error"}}
URL_A, URL_B, URL_C = "https://example.com/a.jpg", "https://example.com/b.jpg", "https://example.com/c.jpg"


@pytest.fixture(scope="module")
def server():
    with SimulatorServer(BASE) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer) -> SimulatorServer:
    """The shared server, reset and back on the fast base config."""
    server.reset()
    server.set_config(**{name: value for name, value in dataclasses.asdict(BASE).items() if name != "faults"})
    return server


def headers(key: str | None = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def create(sim: SimulatorServer, key: str | None = KEY, timeout: float = 5, **fields: Any) -> requests.Response:
    body = {"model": "kling-v3", "prompt": "a golden cat on a meadow", **fields}
    return requests.post(f"{sim.base_url}/v1/videos/generations", json=body, headers=headers(key), timeout=timeout)


def status(sim: SimulatorServer, ref: str, key: str = KEY) -> requests.Response:
    return requests.get(f"{sim.base_url}/v1/videos/generations/{ref}", headers=headers(key), timeout=5)


def balance(sim: SimulatorServer, key: str = KEY, path: str = "/v1/balance") -> dict[str, Any]:
    response = requests.get(f"{sim.base_url}{path}", headers=headers(key), timeout=5)
    assert response.status_code == 200
    return response.json()


def wait_for(sim: SimulatorServer, ref: str, done: tuple[str, ...] = ("completed", "failed"), limit: float = 5) -> dict:
    """Poll until the task's status is one of ``done``; returns the last body."""
    deadline = time.monotonic() + limit
    while True:
        body = status(sim, ref).json()
        if body.get("status") in done or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def upload(sim: SimulatorServer, data: bytes, name: str = "x.png", mime: str = "image/png") -> requests.Response:
    files = {"file": (name, data, mime)}
    return requests.post(
        f"{sim.base_url}/v1/uploads/images", files=files, data={"purpose": "generation"}, headers=headers(), timeout=10
    )


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/videos/generations"),
        ("GET", "/v1/videos/generations/abc"),
        ("POST", "/v1/uploads/images"),
        ("GET", "/v1/balance"),
        ("GET", "/balance"),
        ("GET", "/v1/user/balance"),
        ("GET", "/user/balance"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Basic abc", "Bearer ", "Bearer"])
def test_missing_or_malformed_key_is_401(sim, method, path, auth):
    sent = {"Authorization": auth} if auth is not None else {}
    response = requests.request(method, sim.base_url + path, headers=sent, json={}, timeout=5)
    assert response.status_code == 401
    assert response.json() == AUTH_401


def test_configured_keys_reject_others(sim):
    sim.set_config(api_keys=["sk-good"])
    assert create(sim, key="sk-bad").json() == AUTH_401
    assert create(sim, key="sk-good").status_code == 200
    assert "sk-good" not in json.dumps(requests.get(f"{sim.base_url}/_sim/config", timeout=5).json())


# -- create validation -------------------------------------------------------------------------

DROP = object()
INVALID = [
    ({"model": DROP}, "model"),
    ({"model": "kling-v2"}, "model"),
    ({"prompt": DROP}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 2501}, "prompt"),
    ({"mode": "ultra"}, "mode"),
    ({"duration": "10"}, "duration"),
    ({"duration": True}, "duration"),
    ({"duration": 7}, "duration"),
    ({"duration": 10.0}, "duration"),
    ({"duration": 15, "image_urls": [URL_A]}, "duration"),
    ({"duration": 15, "reference_images": [URL_A]}, "duration"),
    ({"duration": 15, "image_with_roles": [{"url": URL_A, "role": "first_frame"}]}, "duration"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"audio": "yes"}, "audio"),
    ({"audio": 1}, "audio"),
    ({"metadata": "x"}, "metadata"),
    ({"metadata": {"watermark": "no"}}, "metadata.watermark"),
    ({"metadata": {"negative_prompt": 5}}, "metadata.negative_prompt"),
    ({"metadata": {"client_business_id": ""}}, "metadata.client_business_id"),
    ({"client_business_id": 5}, "client_business_id"),
    ({"image_urls": URL_A}, "image_urls"),
    ({"image_urls": ["data:image/png;base64,iVBORw0KGgo="]}, "image_urls[0]"),
    ({"image_urls": [URL_A, "ftp://example.com/b.jpg"]}, "image_urls[1]"),
    ({"image_urls": [URL_A, URL_B, URL_C]}, "image_urls"),
    ({"image_urls": [URL_A], "image_with_roles": [{"url": URL_B, "role": "last_frame"}]}, "image_urls"),
    ({"image_urls": [URL_A], "reference_images": [URL_B]}, "image_urls"),
    ({"reference_images": ["iVBORw0KGgo="]}, "reference_images[0]"),
    ({"image_with_roles": {"url": URL_A}}, "image_with_roles"),
    ({"image_with_roles": [{"url": URL_A}]}, "image_with_roles[0].role"),
    ({"image_with_roles": [{"url": URL_A, "role": "middle"}]}, "image_with_roles[0].role"),
    ({"image_with_roles": [{"url": "data:x", "role": "reference"}]}, "image_with_roles[0].url"),
    (
        {"image_with_roles": [{"url": URL_A, "role": "first_frame"}, {"url": URL_B, "role": "first_frame"}]},
        "image_with_roles",
    ),
]


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f"{field}-{i}" for i, (_, field) in enumerate(INVALID)])
def test_invalid_create_is_400_naming_the_field(sim, changes, field):
    body = {"model": "kling-v3", "prompt": "a cat", **changes}
    body = {name: value for name, value in body.items() if value is not DROP}
    response = requests.post(f"{sim.base_url}/v1/videos/generations", json=body, headers=headers(), timeout=5)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (400, "invalid_request_error")
    assert f"'{field}'" in error["message"]
    assert sim.stats()["tasks_created"] == 0


def test_non_json_body_is_400(sim):
    response = requests.post(f"{sim.base_url}/v1/videos/generations", data="{nope", headers=headers(), timeout=5)
    assert response.status_code == 400
    assert "'body'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "fields",
    [
        {"duration": 15},
        {"duration": 10, "image_urls": [URL_A, URL_B], "mode": "pro", "audio": True, "aspect_ratio": "9:16"},
        {"duration": 10, "reference_images": [URL_A, URL_B, URL_C]},
        {"image_with_roles": [{"url": URL_A, "role": "first_frame"}, {"url": URL_B, "role": "last_frame"}]},
        {"image_urls": [], "metadata": {"negative_prompt": "blur", "watermark": False}, "unknown_field": {"x": 1}},
    ],
)
def test_valid_creates_are_accepted(sim, fields):
    response = create(sim, **fields)
    assert response.status_code == 200, response.text


def test_durations_3_to_15_rule(sim):
    assert create(sim, duration=7).status_code == 400
    sim.set_config(durations="3-15")
    assert create(sim, duration=7).status_code == 200
    assert create(sim, duration=3).status_code == 200
    for bad in (2, 16):
        assert "3-15" in create(sim, duration=bad).json()["error"]["message"]
    assert create(sim, duration=11, image_urls=[URL_A]).status_code == 400
    assert parse_durations("5,10,15") == {5, 10, 15}
    assert parse_durations("3-15") == set(range(3, 16))


# -- progression, replay, lookup ----------------------------------------------------------------


def test_task_phase_is_linear_in_time():
    task = Task("video_X", "k", "p", "std", 5, False, 50, created=1000.0, queued_s=1.0, total_s=5.0, ttl_s=60.0)
    assert task.phase(1000.0) == ("queued", 0)
    assert task.phase(1000.99) == ("queued", 0)
    assert task.phase(1001.0) == ("in_progress", 1)
    assert task.phase(1003.0) == ("in_progress", 50)
    assert task.phase(1004.999) == ("in_progress", 99)
    assert task.phase(1005.0) == ("completed", 100)
    assert (task.completed_at, task.expires_at) == (1005, 1065)


def test_progression_queued_in_progress_completed(sim):
    created = create(sim, client_business_id="kl_prog").json()
    assert created["status"] == "queued" and created["progress"] == 0
    assert created["object"] == "generation.task" and created["model"] == "kling-v3" and created["metadata"] == {}
    assert created["client_business_id"] == "kl_prog" and isinstance(created["created_at"], int)
    assert created["id"].startswith("video_") and len(created["id"]) == 32
    seen, progress = [], []
    while True:
        body = status(sim, created["id"]).json()
        seen.append(body["status"])
        if body["status"] == "in_progress":
            progress.append(body["progress"])
        if body["status"] == "completed":
            break
        time.sleep(0.03)
    assert "in_progress" in seen
    assert progress == sorted(progress) and progress[0] >= 1 and progress[-1] <= 99
    assert body["progress"] == 100 and "metadata" not in body
    assert body["completed_at"] == body["created_at"] + 1
    assert body["expires_at"] == body["completed_at"] + 86400
    url = f"{sim.base_url}/files/videos/{created['id']}.mp4"
    assert body["result"] == {"type": "video", "data": [{"url": url, "format": "mp4"}]}


def test_speed_divides_durations(sim):
    sim.set_config(queued_seconds=1.0, total_seconds=4.0, speed=8.0, ttl_seconds=800)
    task_id = create(sim).json()["id"]
    started = time.monotonic()
    body = wait_for(sim, task_id)
    assert body["status"] == "completed" and time.monotonic() - started < 1.5
    assert body["expires_at"] - body["completed_at"] == 100


def test_replay_by_client_business_id_charges_once(sim):
    first = create(sim, client_business_id="kl_replay").json()
    time.sleep(0.3)
    again = create(sim, client_business_id="kl_replay", prompt="a different prompt", duration=10)
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["status"] in ("in_progress", "completed")
    alias = create(sim, metadata={"client_business_id": "kl_replay"}).json()
    assert alias["id"] == first["id"]
    stats = sim.stats()
    assert (stats["tasks_created"], stats["charged"], stats["replays"]) == (1, 1, 2)
    assert balance(sim)["used_credits"] == 50


def test_lookup_by_business_id_and_metadata_alias(sim):
    task = create(sim, metadata={"client_business_id": "kl_meta"}).json()
    assert task["client_business_id"] == "kl_meta"
    assert status(sim, "kl_meta").json()["id"] == task["id"]
    assert status(sim, "kl_unknown").status_code == 404
    assert status(sim, "kl_unknown").json() == NOT_FOUND
    assert "client_business_id" not in create(sim).json()


def test_state_is_per_key(sim):
    mine = create(sim, client_business_id="kl_shared").json()
    assert status(sim, mine["id"], key=OTHER_KEY).status_code == 404
    assert status(sim, "kl_shared", key=OTHER_KEY).status_code == 404
    theirs = create(sim, key=OTHER_KEY, client_business_id="kl_shared").json()
    assert theirs["id"] != mine["id"]
    assert balance(sim)["used_credits"] == 50 and balance(sim, OTHER_KEY)["used_credits"] == 50
    stats = sim.stats()
    assert stats["tasks_created"] == 2 and len(stats["by_key"]) == 2
    assert hashlib.sha256(KEY.encode()).hexdigest()[:12] in stats["by_key"]
    dumped = json.dumps([stats, sim.requests()])
    assert KEY not in dumped and OTHER_KEY not in dumped


# -- result video ----------------------------------------------------------------------------


def test_mp4_download_head_and_range(sim):
    task_id = create(sim).json()["id"]
    url = f"{sim.base_url}/files/videos/{task_id}.mp4"
    assert requests.get(url, timeout=5).status_code == 404  # not completed yet
    url = wait_for(sim, task_id)["result"]["data"][0]["url"]
    first, second = requests.get(url, timeout=5), requests.get(url, timeout=5)
    assert first.status_code == 200 and first.headers["Content-Type"] == "video/mp4"
    assert int(first.headers["Content-Length"]) == len(first.content) < 20000
    assert first.content[4:8] == b"ftyp" and b"moov" in first.content and b"avc1" in first.content
    digest = hashlib.sha256(first.content).hexdigest()
    assert digest == hashlib.sha256(second.content).hexdigest() == hashlib.sha256(VIDEO.read_bytes()).hexdigest()
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(first.content)) and head.content == b""
    part = requests.get(url, headers={"Range": "bytes=0-15"}, timeout=5)
    assert part.status_code == 206 and part.content == first.content[:16]
    assert part.headers["Content-Range"] == f"bytes 0-15/{len(first.content)}"
    assert requests.get(f"{sim.base_url}/files/videos/video_UNKNOWN.mp4", timeout=5).status_code == 404


def test_mp4_404_after_expiry(sim):
    task_id = create(sim, prompt="short lived [sim:total=0.3] [sim:expire=1]").json()["id"]
    body = wait_for(sim, task_id)
    assert body["expires_at"] == body["completed_at"] + 1
    url = body["result"]["data"][0]["url"]
    assert requests.get(url, timeout=5).status_code == 200
    deadline = time.monotonic() + 3
    while requests.get(url, timeout=5).status_code == 200:
        assert time.monotonic() < deadline, "video never expired"
        time.sleep(0.1)
    assert time.time() >= body["expires_at"] - 0.5
    assert status(sim, task_id).json()["status"] == "completed"


# -- uploads ------------------------------------------------------------------------------------


def test_upload_png_and_serve_it(sim):
    data = png_bytes()
    response = upload(sim, data, name="frame.bin", mime="application/octet-stream")
    body = response.json()
    assert response.status_code == 200 and body["success"] is True and body["message"] == ""
    assert body["data"]["id"].startswith("upload_") and body["data"]["mime_type"] == "image/png"
    assert body["data"]["size"] == len(data) and body["data"]["url"].startswith(f"{sim.base_url}/files/uploads/")
    served = requests.get(body["data"]["url"], timeout=5)
    assert served.content == data and served.headers["Content-Type"] == "image/png"
    assert sim.stats()["requests"]["upload"] == 1


def test_upload_accepts_extension_with_matching_type(sim):
    assert upload(sim, b"not sniffable", name="a.JPG", mime="image/jpeg").json()["data"]["mime_type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("data", "name", "mime", "text"),
    [
        (b"hello", "notes.txt", "text/plain", "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"),
        (b"hello", "x.png", "image/jpeg", "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF"),
        (
            b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024),
            "big.png",
            "image/png",
            "Image too large. Maximum size is 10MB",
        ),
    ],
)
def test_upload_errors_use_envelope_3(sim, data, name, mime, text):
    response = upload(sim, data, name=name, mime=mime)
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": text}


def test_upload_without_file_field(sim):
    response = requests.post(f"{sim.base_url}/v1/uploads/images", data={"purpose": "x"}, headers=headers(), timeout=5)
    assert response.status_code == 400 and response.json()["success"] is False


# -- balance, credits, refunds ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/balance", "/balance", "/v1/user/balance", "/user/balance"])
def test_balance_shape(sim, path):
    body = balance(sim, path=path)
    assert body == {
        "success": True,
        "remain_balance": 500.0,
        "used_balance": 0.0,
        "remain_credits": 100000,
        "used_credits": 0,
        "credits_per_usd": 200,
        "unlimited_quota": False,
    }


def test_balance_deduction_and_402(sim):
    sim.set_config(initial_credits=300)
    assert create(sim, mode="pro", duration=10, audio=True).status_code == 200  # 10 s * 15 * 1.5 = 225
    assert balance(sim)["remain_credits"] == 75 and balance(sim)["used_credits"] == 225
    assert create(sim).status_code == 200  # 50
    response = create(sim)
    assert response.status_code == 402
    assert response.json() == {"error": {"code": 402, "message": "Insufficient balance", "type": "payment_required"}}
    assert sim.stats()["tasks_created"] == 2 and balance(sim)["remain_credits"] == 25


def test_failed_task_is_refunded(sim):
    sim.set_config(initial_credits=60)
    failing = create(sim, prompt="x [sim:generation_failed]").json()
    assert balance(sim)["remain_credits"] == 10
    assert create(sim).status_code == 402
    assert wait_for(sim, failing["id"])["status"] == "failed"
    assert balance(sim)["remain_credits"] == 60
    assert create(sim).status_code == 200
    stats = sim.stats()
    assert (stats["charged"], stats["refunded"], stats["credits_refunded"]) == (2, 1, 50)


# -- faults ------------------------------------------------------------------------------------


def test_rate_limit_fault(sim):
    sim.add_fault(fault="rate_limit", endpoint="create", count=2, retry_after=2)
    for _ in range(2):
        response = create(sim)
        assert response.status_code == 429
        assert response.json() == {
            "error": {"message": "Rate limit exceeded", "type": "rate_limit_error", "code": "rate_limit_exceeded"}
        }
        assert response.headers["Retry-After"] == "2" and response.headers["X-RateLimit-Category"] == "async_submit"
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(response.headers)
    assert create(sim).status_code == 200
    sim.add_fault("rate_limit:status:1:retry_after_http_date=true")
    response = status(sim, "whatever")
    assert response.status_code == 429 and response.headers["X-RateLimit-Category"] == "async_query"
    assert email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp() > time.time() - 1
    stats = sim.stats()
    assert stats["faults_fired"] == {"rate_limit": 3} and stats["rate_limited"] == 3 and stats["tasks_created"] == 1


def test_unavailable_fault(sim):
    sim.add_fault(fault="unavailable", endpoint="create", retry_after=3)
    response = create(sim)
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["code"] == "rate_limit_unavailable"
    assert create(sim).status_code == 200


def test_server_error_faults(sim):
    sim.add_fault(fault="server_error", endpoint="status")
    sim.add_fault(fault="server_error", endpoint="status", status=502)
    response = status(sim, "x")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    response = status(sim, "x")
    assert response.status_code == 502 and response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"
    assert status(sim, "x").status_code == 404


def test_forever_fault_and_clearing_over_http(sim):
    added = requests.post(
        f"{sim.base_url}/_sim/faults", json=[{"fault": "server_error", "endpoint": "balance", "count": -1}], timeout=5
    )
    assert added.json()["faults"][0]["count"] == -1
    for _ in range(3):
        assert requests.get(f"{sim.base_url}/v1/balance", headers=headers(), timeout=5).status_code == 500
    assert requests.delete(f"{sim.base_url}/_sim/faults", timeout=5).json() == {"faults": []}
    assert balance(sim)["success"] is True
    bad = requests.post(f"{sim.base_url}/_sim/faults", json={"fault": "explode"}, timeout=5)
    assert bad.status_code == 400 and "explode" in bad.json()["error"]["message"]
    bad = requests.post(
        f"{sim.base_url}/_sim/faults", json={"fault": "drop_after_create", "endpoint": "status"}, timeout=5
    )
    assert bad.status_code == 400


def test_drop_before_create_creates_nothing(sim):
    sim.add_fault(fault="drop", endpoint="create")
    with pytest.raises(requests.ConnectionError):
        create(sim, client_business_id="kl_drop")
    assert status(sim, "kl_drop").status_code == 404
    assert sim.stats()["tasks_created"] == 0
    assert sim.requests(3)[0]["status"] is None


def test_drop_after_create_creates_and_charges_once(sim):
    sim.add_fault(fault="drop_after_create")
    with pytest.raises(requests.ConnectionError):
        create(sim, client_business_id="kl_lost")
    found = status(sim, "kl_lost")
    assert found.status_code == 200
    assert create(sim, client_business_id="kl_lost").json()["id"] == found.json()["id"]
    stats = sim.stats()
    assert (stats["tasks_created"], stats["charged"], stats["replays"]) == (1, 1, 1)


@pytest.mark.parametrize("endpoint", ["create", "status"])
def test_malformed_fault(sim, endpoint):
    task_id = create(sim, client_business_id="kl_bad").json()["id"]
    sim.add_fault(fault="malformed", endpoint=endpoint)
    response = create(sim, client_business_id="kl_new") if endpoint == "create" else status(sim, task_id)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(response.text)
    assert response.text.startswith('{"id": "video_')
    if endpoint == "create":
        assert status(sim, "kl_new").status_code == 200


def test_slow_fault_times_out_client_then_creates(sim):
    sim.add_fault(fault="slow", endpoint="create", delay=0.6)
    with pytest.raises(requests.Timeout):
        create(sim, timeout=0.2, client_business_id="kl_slow")
    assert status(sim, "kl_slow").status_code == 404  # created only after the delay
    time.sleep(0.6)
    assert status(sim, "kl_slow").status_code == 200
    sim.add_fault(fault="slow", endpoint="status", delay=0.3)
    started = time.monotonic()
    assert status(sim, "kl_slow").status_code == 200 and time.monotonic() - started >= 0.3


def test_balance_failure_fault(sim):
    sim.add_fault(fault="balance_failure", endpoint="any")
    assert create(sim).status_code == 200  # endpoint "any" still fires only on balance
    response = requests.get(f"{sim.base_url}/v1/user/balance", headers=headers(), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"success": False, "message": "Failed to get token info: record not found"}


def test_late_visibility_fault(sim):
    task_id = create(sim).json()["id"]
    sim.add_fault(fault="late_visibility", count=2)
    assert [status(sim, task_id).status_code for _ in range(3)] == [404, 404, 200]


def test_not_found_grace_config(sim):
    sim.set_config(not_found_grace_seconds=0.3)
    task_id = create(sim).json()["id"]
    assert status(sim, task_id).json() == NOT_FOUND
    time.sleep(0.35)
    assert status(sim, task_id).status_code == 200


def test_startup_faults_and_cli_spec_parsing():
    spec = FaultSpec.parse("server_error:status:2:status=502")
    assert (spec.fault, spec.endpoint, spec.count, spec.status) == ("server_error", "status", 2, 502)
    assert FaultSpec.parse("drop_after_create").endpoint == "create"
    assert FaultSpec.parse('{"fault": "slow", "delay": 0.5}').delay == 0.5
    with pytest.raises(ValueError):
        FaultSpec.parse("rate_limit:nowhere")
    config = SimulatorConfig(faults=["rate_limit:create:1", {"fault": "unavailable", "endpoint": "status"}])
    with SimulatorServer(config) as sim:
        assert [fault["fault"] for fault in sim.faults()] == ["rate_limit", "unavailable"]
        assert create(sim).status_code == 429 and create(sim).status_code == 200


# -- prompt markers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        (
            "[sim:content_policy]",
            {"code": "content_policy_violation", "message": "Content violates the content policy"},
        ),
        ("[sim:generation_failed]", {"code": "generation_failed", "message": "Generation failed"}),
        (
            "[sim:policy_message]",
            {"code": "generation_failed", "message": "Generation failed: Content violates the content policy"},
        ),
    ],
)
def test_failure_markers(sim, marker, error):
    task_id = create(sim, prompt=f"a cat {marker}").json()["id"]
    body = wait_for(sim, task_id)
    assert (body["status"], body["progress"], body["error"]) == ("failed", 0, error)
    assert "result" not in body and "completed_at" not in body


def test_content_policy_422_marker(sim):
    response = create(sim, prompt="[sim:content_policy_422] forbidden")
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("content_policy_violation", "invalid_request_error")
    assert sim.stats()["tasks_created"] == 0 and balance(sim)["used_credits"] == 0


def test_fail_first_marker(sim):
    prompt = "retry me [sim:fail_first=1]"
    first = create(sim, prompt=prompt, client_business_id="kl_ff").json()
    second = create(sim, prompt=prompt, client_business_id="kl_ff_r2").json()
    other = create(sim, prompt=prompt + " again").json()
    assert wait_for(sim, first["id"])["error"]["code"] == "generation_failed"
    assert wait_for(sim, second["id"])["status"] == "completed"
    assert wait_for(sim, other["id"])["status"] == "failed"
    assert status(sim, "kl_ff").json()["status"] == "failed"


def test_never_finish_and_no_url_markers(sim):
    never = create(sim, prompt="[sim:never_finish] [sim:total=0.3]").json()["id"]
    empty = create(sim, prompt="[sim:no_url] [sim:total=0.3]").json()["id"]
    time.sleep(0.5)
    assert status(sim, never).json()["status"] == "in_progress" and status(sim, never).json()["progress"] == 99
    body = status(sim, empty).json()
    assert body["status"] == "completed" and body["result"] == {"type": "video", "data": []}
    assert requests.get(f"{sim.base_url}/files/videos/{empty}.mp4", timeout=5).status_code == 404


def test_legacy_marker(sim):
    created = create(sim, prompt="[sim:legacy] old style").json()
    assert created["status"] == "submitted" and created["progress"] == "0%"
    seen = set()
    while True:
        body = status(sim, created["id"]).json()
        seen.add(body["status"])
        if body["status"] == "processing":
            assert body["progress"].endswith("%")
        if body["status"] == "SUCCESS":
            break
        time.sleep(0.05)
    assert "processing" in seen and body["progress"] == "100%" and "result" not in body
    assert requests.get(body["url"], timeout=5).content[4:8] == b"ftyp"
    assert "[sim:legacy]" in sim.stats()["tasks"][0]["prompt"]


def test_late_visibility_marker(sim):
    task_id = create(sim, prompt="[sim:late_visibility]", client_business_id="kl_late").json()["id"]
    assert status(sim, task_id).status_code == 404 and status(sim, "kl_late").status_code == 404
    deadline = time.monotonic() + 4
    while status(sim, task_id).status_code == 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status(sim, "kl_late").status_code == 200


# -- quota, language, control routes, connections ----------------------------------------------


def test_enforce_quota_per_second(sim):
    sim.set_config(enforce_quota=True, submit_per_sec=3, query_per_sec=4)
    assert [create(sim).status_code for _ in range(3)] == [200, 200, 200]
    limited = create(sim)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Category"] == "async_submit"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert create(sim).status_code == 429  # rejected requests consume nothing...
    time.sleep(0.36)
    assert [create(sim).status_code for _ in range(2)] == [200, 429]  # ...so exactly one is free again
    assert [status(sim, "x").status_code for _ in range(4)] == [404] * 4  # independent query bucket
    assert status(sim, "x").headers["X-RateLimit-Category"] == "async_query"
    assert create(sim, key=OTHER_KEY).status_code == 200  # per key
    assert sim.stats()["rate_limited"] == 4


def test_chinese_messages(sim):
    sim.set_config(language="zh")
    assert create(sim, key=None).json()["error"]["code"] == 401
    assert "API" in create(sim, key=None).json()["error"]["message"] and create(sim, key=None).json() != AUTH_401
    error = create(sim, duration="10").json()["error"]
    assert error["code"] == 400 and error["message"].startswith("参数 'duration'")
    assert status(sim, "nope").json()["error"] == {"code": 404, "message": "任务不存在", "type": "not_found_error"}
    task_id = create(sim, prompt="[sim:policy_message]").json()["id"]
    assert wait_for(sim, task_id)["error"] == {"code": "generation_failed", "message": "生成失败: 内容违反了内容政策"}


def test_control_routes_over_http(sim):
    base = sim.base_url
    create(sim, duration=10, client_business_id="kl_ctl")
    records = requests.get(f"{base}/_sim/requests?limit=1", timeout=5).json()["requests"]
    assert len(records) == 1 and records[0]["body"]["duration"] == 10 and records[0]["status"] == 200
    assert set(records[0]) == {"method", "path", "status", "t", "arrived", "key_hash", "body"}
    assert (
        requests.post(f"{base}/_sim/config", json={"total_seconds": 2}, timeout=5).json()["config"]["total_seconds"]
        == 2
    )
    assert requests.post(f"{base}/_sim/config", json={"bogus": 1}, timeout=5).status_code == 400
    assert requests.post(f"{base}/_sim/config", json={"queued_seconds": 9}, timeout=5).status_code == 400
    stats = requests.get(f"{base}/_sim/stats", timeout=5).json()
    assert stats["tasks"][0]["client_business_id"] == "kl_ctl" and stats["requests"]["create"] == 1
    assert requests.post(f"{base}/_sim/reset", timeout=5).json() == {"ok": True}
    assert sim.stats()["tasks_created"] == 0 and sim.requests() == []


def test_connections_are_counted(sim):
    sessions = [requests.Session() for _ in range(3)]
    try:
        for session in sessions:
            session.get(f"{sim.base_url}/v1/balance", headers=headers(), timeout=5)
        stats = sim.stats()
        assert stats["max_concurrent_connections"] >= 3 and stats["open_connections"] >= 3
        assert stats["requests_per_second_max"] >= 1
    finally:
        for session in sessions:
            session.close()
    deadline = time.monotonic() + 2
    while sim.stats()["open_connections"] > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.stats()["open_connections"] == 0


async def test_runs_inside_an_existing_loop():
    server = SimulatorServer(SimulatorConfig(queued_seconds=0, total_seconds=0))
    await server.start_async()
    try:
        async with aiohttp.ClientSession(headers=headers()) as session:
            url = f"{server.base_url}/v1/videos/generations"
            async with session.post(url, json={"model": "kling-v3", "prompt": "now"}) as response:
                task = await response.json()
            async with session.get(f"{url}/{task['id']}") as response:
                assert (await response.json())["status"] == "completed"
            server.add_fault(fault="drop", endpoint="create")
            with pytest.raises(aiohttp.ServerDisconnectedError):
                async with session.post(url, json={"model": "kling-v3", "prompt": "lost"}):
                    pass
            # aiohttp retries an idempotent request once when a reused connection drops it.
            server.add_fault(fault="drop", endpoint="balance")
            async with session.get(f"{server.base_url}/balance") as response:
                assert response.status == 200
    finally:
        await server.stop_async()
    assert server.stats()["tasks_created"] == 1
    assert [record["status"] for record in server.requests(3)] == [None, None, 200]


# -- command line ------------------------------------------------------------------------------


def test_cli_port_file_and_sigterm(tmp_path):
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "airflow_provider_kling.simulator", "--port", "0", "--port-file", str(port_file)]
    command += ["--total-seconds", "1", "--fault", "rate_limit:create:1", "--credits", "70"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            line = process.stdout.readline() if process.stdout else ""
            assert line.startswith("kling-simulator listening on http://127.0.0.1:")
            port = int(port_file.read_text())
            assert line.strip().endswith(f":{port}")
            url = f"http://127.0.0.1:{port}"
            body = {"model": "kling-v3", "prompt": "cli"}
            assert (
                requests.post(f"{url}/v1/videos/generations", json=body, headers=headers(), timeout=5).status_code
                == 429
            )
            assert requests.get(f"{url}/balance", headers=headers(), timeout=5).json()["remain_credits"] == 70
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--fault", "explode"])
    assert exit_info.value.code == 2 and "explode" in capsys.readouterr().err
