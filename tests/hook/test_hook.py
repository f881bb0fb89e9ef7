"""KlingHook against the local simulator: the real HTTP path, faults, retries and secrets."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingContentPolicyError,
    KlingRateLimitError,
    KlingValidationError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingVideoRequest, TaskStatus
from tests.conftest import TEST_API_KEY, connection_uri, wait_terminal

ASSET = Path(__file__).resolve().parents[2] / "airflow_provider_kling" / "simulator" / "assets" / "sample.mp4"
PNG = Path(__file__).resolve().parents[2] / "example_dags" / "assets" / "first_frame.png"


def req(**kw):
    return KlingVideoRequest.from_kwargs(**{"prompt": "a cat on a meadow", **kw})


@pytest.fixture
def hook(sim):
    h = KlingHook()
    yield h
    h.close()


def creates(sim):
    return [r for r in sim.requests() if r["path"] == "/v1/videos/generations" and r["method"] == "POST"]


def test_submit_lookup_and_replay(sim, hook):
    task = hook.submit_video(req(mode="pro", duration="10", audio=True), "kl_replay")
    assert task.status is TaskStatus.QUEUED and task.id.startswith("video_")
    body = creates(sim)[-1]["body"]
    assert body["duration"] == 10 and body["mode"] == "pro" and body["audio"] is True
    assert body["client_business_id"] == "kl_replay"
    by_business_id = hook.get_task("kl_replay")
    assert by_business_id.id == task.id
    again = hook.submit_video(req(), "kl_replay")
    assert again.id == task.id
    assert sim.stats()["tasks_created"] == 1


def test_completed_task_has_video_and_expiry(sim, hook):
    task = hook.submit_video(req(), "kl_done")
    done = wait_terminal(hook, task.id)
    assert done.status is TaskStatus.COMPLETED
    assert done.video_url.startswith(sim.base_url)
    assert done.expires_at is not None and done.client_business_id == "kl_done"


def test_missing_task_is_none_or_404(sim, hook):
    assert hook.get_task("kl_nothing", missing_ok=True) is None
    with pytest.raises(KlingAPIError) as info:
        hook.get_task("kl_nothing")
    assert info.value.status == 404


def test_429_waits_for_retry_after(sim, hook):
    sim.add_fault(fault="rate_limit", endpoint="create", count=2, retry_after=1)
    task = hook.submit_video(req(), "kl_429")
    times = [r["t"] for r in creates(sim)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95
    assert hook.get_task(task.id).id == task.id
    assert sim.stats()["tasks_created"] == 1


def test_429_http_date_retry_after(sim, hook):
    sim.add_fault(fault="rate_limit", endpoint="status", count=1, retry_after=1, retry_after_http_date=True)
    task = hook.submit_video(req(), "kl_date")
    assert hook.get_task(task.id).id == task.id


def test_429_gives_up_at_deadline(sim, hook):
    sim.add_fault(fault="rate_limit", endpoint="status", count=-1, retry_after=5)
    started = time.time()
    with pytest.raises(KlingRateLimitError):
        hook.get_task("kl_x", policy=RetryPolicy(deadline=time.time() + 2))
    assert time.time() - started < 2
    assert len([r for r in sim.requests() if r["status"] == 429]) == 1


def test_503_is_waited_out(sim, hook):
    sim.add_fault(fault="unavailable", endpoint="create", count=1, retry_after=1)
    hook.submit_video(req(), "kl_503")
    assert sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize("status", [500, 502])
def test_5xx_retried_then_given_up(sim, hook, status):
    sim.add_fault(fault="server_error", endpoint="status", count=-1, status=status)
    policy = RetryPolicy(transient_attempts=3, backoff_base=0.05)
    with pytest.raises(KlingAPIError) as info:
        hook.get_task("kl_any", policy=policy)
    assert info.value.status == status
    assert sim.stats()["requests"]["status"] == 3


def test_5xx_on_create_replays_one_task(sim, hook):
    sim.add_fault(fault="server_error", endpoint="create", count=2)
    hook.submit_video(req(), "kl_500", policy=RetryPolicy(backoff_base=0.05))
    assert sim.stats()["tasks_created"] == 1


def test_dropped_connection_after_create_is_replayed(sim, hook):
    sim.add_fault(fault="drop_after_create", endpoint="create", count=1)
    task = hook.submit_video(req(), "kl_drop", policy=RetryPolicy(backoff_base=0.05))
    assert task.client_business_id == "kl_drop"
    assert sim.stats()["tasks_created"] == 1 and sim.stats()["charged"] == 1


def test_malformed_json_gives_clear_error(sim, hook):
    sim.add_fault(fault="malformed", endpoint="status", count=-1)
    with pytest.raises(KlingAPIError, match="malformed body") as info:
        hook.get_task("kl_m", policy=RetryPolicy(transient_attempts=2, backoff_base=0.05))
    assert info.value.code == "malformed_response"


def test_malformed_create_is_recovered_without_double_billing(sim, hook):
    sim.add_fault(fault="malformed", endpoint="create", count=1)
    task = hook.submit_video(req(), "kl_mc", policy=RetryPolicy(backoff_base=0.05))
    assert task.id and sim.stats()["tasks_created"] == 1


def test_slow_response_times_out_and_retries(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, timeout=0.5))
    sim.add_fault(fault="slow", endpoint="status", count=1, delay=2)
    hook = KlingHook()
    task = hook.submit_video(req(), "kl_slow")
    assert hook.get_task(task.id, policy=RetryPolicy(backoff_base=0.05)).id == task.id
    hook.close()


def test_content_policy_422_at_create(sim, hook):
    with pytest.raises(KlingContentPolicyError):
        hook.submit_video(req(prompt="bad [sim:content_policy_422]"), "kl_422")
    assert sim.stats()["tasks_created"] == 0


def test_401_is_not_retried(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, key="sk-wrong"))
    sim.set_config(api_keys=[TEST_API_KEY])
    hook = KlingHook()
    with pytest.raises(KlingAuthError, match="authentication failed"):
        hook.get_task("kl_a")
    assert sim.stats()["requests"]["status"] == 1
    assert hook.test_connection() == (False, "invalid API key (authentication failed)")


def test_test_connection_reports_credits(sim, hook):
    ok, message = hook.test_connection()
    assert ok and "credits remaining" in message and "$" in message


def test_balance_failure_message(sim, hook):
    sim.add_fault(fault="balance_failure", endpoint="balance", count=1)
    ok, message = hook.test_connection()
    assert not ok and "record not found" in message


def test_upload_and_use_as_first_frame(sim, hook):
    url = hook.upload_image(PNG)
    assert url.startswith(sim.base_url)
    task = hook.submit_video(req(image_urls=[url]), "kl_img")
    assert creates(sim)[-1]["body"]["image_urls"] == [url]
    assert task.id


def test_upload_checks_locally_first(sim, hook, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * (10 * 1024 * 1024))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(KlingValidationError, match="upload limit is 10 MB"):
        hook.upload_image(big)
    with pytest.raises(KlingValidationError, match="not a JPEG, PNG, WebP or GIF"):
        hook.upload_image(text)
    with pytest.raises(KlingValidationError, match="no such file"):
        hook.upload_image(tmp_path / "missing.png")
    assert sim.stats()["requests"]["upload"] == 0


def test_download_streams_real_mp4(sim, hook, tmp_path):
    task = wait_terminal(hook, hook.submit_video(req(), "kl_dl").id)
    path = hook.download_video(task, tmp_path / "out" / "v.mp4")
    data = path.read_bytes()
    assert data[4:8] == b"ftyp"
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(ASSET.read_bytes()).hexdigest()
    auth = [r for r in sim.requests() if r["path"].startswith("/files/")]
    assert auth and all(r.get("key_hash") in (None, "") for r in auth)


def test_download_refuses_expired_url(sim, hook, tmp_path):
    result = {"video_url": f"{sim.base_url}/files/videos/x.mp4", "expires_at": "2020-01-01T00:00:00Z"}
    with pytest.raises(KlingAPIError, match="expired"):
        hook.download_video(result, tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists()


def test_key_never_in_logs_reprs_or_errors(sim, hook, caplog):
    caplog.set_level(logging.DEBUG)
    sim.add_fault(fault="server_error", endpoint="status", count=1)
    sim.add_fault(fault="rate_limit", endpoint="status", count=1, retry_after=0)
    task = hook.submit_video(req(), "kl_secret")
    hook.get_task(task.id, policy=RetryPolicy(backoff_base=0.01))
    errors = []
    for call in (
        lambda: hook.get_task("kl_none"),
        lambda: hook.submit_video(req(prompt="x [sim:content_policy_422]"), "kl_p"),
    ):
        try:
            call()
        except Exception as err:
            errors.append(f"{err!r} {err}")
    text = caplog.text + repr(hook) + repr(hook.settings) + " ".join(errors)
    assert TEST_API_KEY not in text
    assert errors


def test_a_submit_429_leaves_queries_free(sim, hook):
    # The create's 429 (X-RateLimit-Category: async_submit) pauses the submit budget for 30 s ...
    sim.add_fault(fault="rate_limit", endpoint="create", count=1, retry_after=30)
    with pytest.raises(KlingRateLimitError):
        hook.submit_video(req(), "kl_bucket_1", policy=RetryPolicy(deadline=time.time() + 1))
    # ... while status and balance calls go on (a 30 s pause could not fit their 5 s deadline).
    assert hook.get_balance(RetryPolicy(deadline=time.time() + 5))["success"] is not False
    assert hook.get_task("kl_none", RetryPolicy(deadline=time.time() + 5), missing_ok=True) is None


def test_a_query_429_leaves_submits_free(sim, hook):
    sim.add_fault(fault="rate_limit", endpoint="status", count=1, retry_after=30)
    with pytest.raises(KlingRateLimitError):
        hook.get_task("kl_none", RetryPolicy(deadline=time.time() + 1), missing_ok=True)
    task = hook.submit_video(req(), "kl_bucket_2", policy=RetryPolicy(deadline=time.time() + 5))
    assert task.id and sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        ({"rate_limit_group": "gold"}, "rate_limit_group='gold': must be one of default, vip, svip"),
        ({"max_submits_per_minute": "0"}, "max_submits_per_minute='0': must be a positive number"),
    ],
)
def test_bad_budget_extras_fail_before_any_request(sim, monkeypatch, extras, fragment):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, **extras))
    bad = KlingHook()
    with pytest.raises(KlingValidationError, match=fragment):
        bad.submit_video(req(), "kl_bad_extra")
    assert sim.requests() == []
