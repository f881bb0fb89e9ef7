"""Pure pieces of the HTTP layer: base URLs, error envelopes, Retry-After, the request budget."""

from __future__ import annotations

import email.utils
import time
from types import SimpleNamespace

import pytest

from airflow_provider_kling.api import ClientSettings, base_url_from, parse_retry_after
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingContentPolicyError,
    KlingInsufficientCreditsError,
    KlingRateLimitError,
    KlingRequestValidationError,
    KlingValidationError,
    error_from_response,
    parse_error_body,
)
from airflow_provider_kling.ratelimit import RequestBudget


@pytest.mark.parametrize(
    ("host", "port", "schema", "url"),
    [
        (None, None, None, "https://toapis.com"),
        ("", None, None, "https://toapis.com"),
        ("toapis.cn", None, None, "https://toapis.cn"),
        ("http://127.0.0.1:8765", None, None, "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765/", None, None, "http://127.0.0.1:8765"),
        ("https://toapis.com/v1", None, None, "https://toapis.com"),
        ("127.0.0.1", 8765, "http", "http://127.0.0.1:8765"),
        ("127.0.0.1", 8765, None, "https://127.0.0.1:8765"),
        ("api.example.com", None, "https", "https://api.example.com"),
        ("HTTPS://Api.Example.com", None, None, "https://Api.Example.com"),
    ],
)
def test_base_url(host, port, schema, url):
    assert base_url_from(host, port, schema) == url


@pytest.mark.parametrize(
    "host",
    ["ftp://toapis.com", "http://", "https://to apis.com", "http://user:pw@host", "http://h:99999", "http://h:x"],
)
def test_bad_hosts(host):
    with pytest.raises(ValueError):
        base_url_from(host)


def conn(**kw):
    values = {"host": "http://127.0.0.1:1", "port": None, "schema": None, "password": "sk-x"} | kw
    return SimpleNamespace(**values)


def test_settings_from_connection_and_masked_repr():
    settings = ClientSettings.from_connection(conn(), {"timeout": "12", "max_requests_per_minute": 60}, "c")
    assert (settings.read_timeout, settings.requests_per_minute) == (12.0, 60.0)
    assert "sk-x" not in repr(settings) and "sk-x" not in repr(settings.api_key)
    assert settings.auth_headers["Authorization"] == "Bearer sk-x"


@pytest.mark.parametrize(
    ("kw", "extras", "fragment"),
    [
        ({"host": "ftp://x"}, {}, "host='ftp://x'"),
        ({}, {"timeout": "soon"}, "extra timeout='soon'"),
        ({}, {"timeout": -1}, "extra timeout=-1"),
        ({}, {"max_requests_per_minute": 0}, "max_requests_per_minute=0"),
        ({}, {"business_id_prefix": "has space"}, "business_id_prefix"),
    ],
)
def test_bad_connection_settings_name_the_field(kw, extras, fragment):
    with pytest.raises(KlingValidationError, match=fragment):
        ClientSettings.from_connection(conn(**kw), extras, "c")


def test_missing_key_is_an_auth_error():
    with pytest.raises(KlingAuthError, match="no API key"):
        ClientSettings.from_connection(conn(password=None), {}, "kling_default")


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            400,
            b'{"error":{"code":400,"message":"bad duration","type":"invalid_request_error"}}',
            KlingRequestValidationError,
            "400",
        ),
        (
            401,
            b'{"error":{"code":401,"message":"Authentication failed","type":"authentication_error"}}',
            KlingAuthError,
            "401",
        ),
        (403, b"forbidden", KlingAuthError, None),
        (
            402,
            b'{"error":{"code":402,"message":"Insufficient","type":"payment_required"}}',
            KlingInsufficientCreditsError,
            "402",
        ),
        (404, b'{"error":{"code":404,"message":"Task not found","type":"not_found_error"}}', KlingAPIError, "404"),
        (
            422,
            b'{"error":{"code":"content_policy_violation","message":"no"}}',
            KlingContentPolicyError,
            "content_policy_violation",
        ),
        (
            429,
            b'{"error":{"message":"Rate limit","type":"rate_limit_error","code":"rate_limit_exceeded"}}',
            KlingRateLimitError,
            "rate_limit_exceeded",
        ),
        (
            500,
            b'{"error":{"message":"oops","type":"server_error","code":"internal_error"}}',
            KlingAPIError,
            "internal_error",
        ),
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", KlingAPIError, None),
        (
            503,
            b'{"error":{"code":"rate_limit_unavailable","message":"limiter down"}}',
            KlingAPIError,
            "rate_limit_unavailable",
        ),
        (
            400,
            b'{"success":false,"message":"Image too large. Maximum size is 10MB"}',
            KlingRequestValidationError,
            None,
        ),
    ],
)
def test_error_envelopes(status, body, cls, code):
    err = error_from_response(status, body, what="create")
    assert type(err) is cls
    assert getattr(err, "code", None) == code or code is None
    assert str(status) in str(err) or cls is KlingContentPolicyError


def test_non_json_body_keeps_200_chars():
    code, etype, message = parse_error_body(b"<html>" + b"x" * 500)
    assert code is None and etype is None and len(message) == 200


def test_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("99999") == 600.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(date) <= 31


def test_budget_paces_after_burst():
    budget = RequestBudget(per_minute=600 / 0.95, burst_seconds=1.0)  # 10/s after the safety factor
    now = 1000.0
    delays = [budget.reserve(now) for _ in range(30)]
    assert delays[:10] == [0.0] * 10
    assert delays[10] == pytest.approx(0.1)
    assert delays[29] == pytest.approx(2.0)


def test_default_budget_never_exceeds_the_per_second_quota():
    budget = RequestBudget(per_minute=3000)
    sends = [1000.0 + budget.reserve(1000.0) for _ in range(500)]
    worst = max(sum(1 for t in sends if start <= t < start + 1.0) for start in sends)
    assert worst <= 50


def test_budget_pause_holds_every_caller():
    budget = RequestBudget(per_minute=6000)
    budget.pause(5.0, now=100.0)
    assert budget.reserve(now=101.0) == pytest.approx(4.0)
    assert budget.reserve(now=101.0) >= 4.0
    assert budget.paused_for(now=106.0) == 0.0
