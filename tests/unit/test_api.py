"""Pure pieces of the HTTP layer: base URLs, error envelopes, Retry-After, the request budget."""

from __future__ import annotations

import email.utils
import itertools
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
        # An endpoint pasted from the API docs: the provider adds the API's paths itself.
        ("https://toapis.com/v1/videos/generations", None, None, "https://toapis.com"),
        ("https://toapis.com/v1/videos/generations/video_01J9/", None, None, "https://toapis.com"),
        ("https://toapis.com/V1/Balance", None, None, "https://toapis.com"),
        ("http://10.0.0.5:8080/kling/v1/uploads/images", None, None, "http://10.0.0.5:8080/kling"),
        ("https://gw.example/api/v1/kling", None, None, "https://gw.example/api/v1/kling"),
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
    assert parse_retry_after("99999") == 600.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(date) <= 31


@pytest.mark.parametrize("value", ["0", "-4", "0.0", "nan", "soon", "", email.utils.formatdate(1e9, usegmt=True)])
def test_retry_after_now_past_or_unreadable_is_no_hint(value):
    """No hint, so the backoff (>= 1 s) applies: 0 or a past date must not mean "retry at once"."""
    assert parse_retry_after(value) is None


def test_throttle_without_hint_waits_at_least_one_second():
    from tenacity import RetryCallState, Retrying

    from airflow_provider_kling.api import RetryPolicy

    kwargs = RetryPolicy(backoff_base=0.001).tenacity_kwargs()
    state = RetryCallState(Retrying(), None, (), {})
    state.set_exception((KlingRateLimitError, KlingRateLimitError("429", status=429, retry_after=None), None))
    assert kwargs["retry"](state) is True
    assert kwargs["wait"](state) >= 1.0


def test_policy_without_deadline_gets_a_finite_one():
    from airflow_provider_kling.api import DEFAULT_CALL_SECONDS, RetryPolicy

    bounded = RetryPolicy().bounded()
    assert bounded.deadline is not None and bounded.deadline <= time.time() + DEFAULT_CALL_SECONDS
    fixed = RetryPolicy(deadline=123.0)
    assert fixed.bounded() is fixed


def test_budget_wait_past_the_deadline_fails_without_taking_a_slot():
    from airflow_provider_kling.api import slot_wait

    budget = RequestBudget(per_minute=6000)
    budget.pause(30.0)
    with pytest.raises(KlingRateLimitError, match="deadline") as info:
        slot_wait(budget, time.time() + 5, "status")
    # A throttle (waited out like a 429 until the caller's deadline), not a transient fault.
    assert info.value.code == "request_budget" and info.value.status is None
    assert 25 < slot_wait(budget, time.time() + 60, "status").delay <= 30


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" sk-abc\n", "sk-abc"),
        ("\tsk-abc \r\n", "sk-abc"),
        ("sk-é", "sk-é"),
    ],
)
def test_key_surrounding_whitespace_is_stripped(raw, expected):
    settings = ClientSettings.from_connection(conn(password=raw), {}, "c")
    assert str(settings.api_key) == expected
    assert settings.auth_headers["Authorization"] == f"Bearer {expected}"
    settings.auth_headers["Authorization"].encode("latin-1")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("sk-ab\u200bcd", "zero width space (U+200B) at character 6 of 8"),
        ("sk-ab\ncd", "(U+000A) at character 6 of 8"),
        ("sk-\u4e2dcd", "(U+4E2D) at character 4 of 6"),
        ("sk-\x85cd", "(U+0085) at character 4 of 6"),
    ],
)
def test_key_with_control_or_non_latin1_characters_is_refused(raw, fragment):
    with pytest.raises(KlingAuthError) as info:
        ClientSettings.from_connection(conn(password=raw), {}, "c")
    assert fragment in str(info.value)
    assert "sk-ab" not in str(info.value) and "cd" not in str(info.value).split("U+")[0][-20:]


def test_proxy_decision_env_no_proxy_and_extra(monkeypatch):
    from airflow_provider_kling.api import proxy_for

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://toapis.com/v1/x") is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.corp:8080")
    assert proxy_for("https://toapis.com/v1/x") == "http://proxy.corp:3128"
    assert proxy_for("http://127.0.0.1:9/v1/x") == "http://plain.corp:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal")
    assert proxy_for("http://127.0.0.1:9/v1/x") is None
    assert proxy_for("https://files.internal/v.mp4") is None
    assert proxy_for("https://toapis.com/v1/x") == "http://proxy.corp:3128"
    assert proxy_for("https://toapis.com/v1/x", "http://extra:1") == "http://extra:1"


def test_ca_decision_env_and_extra(monkeypatch, tmp_path):
    from airflow_provider_kling.api import tls_verify

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert tls_verify() is True
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ca.pem")
    assert tls_verify() == "/etc/ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests.pem")
    assert tls_verify() == "/etc/requests.pem"
    assert tls_verify(False) is False
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    settings = ClientSettings.from_connection(conn(), {"verify": str(bundle), "proxy": "http://p:3128"}, "c")
    assert (settings.ca_verify, settings.api_proxy) == (str(bundle), "http://p:3128")
    assert ClientSettings.from_connection(conn(), {"verify": "false"}, "c").ca_verify is False


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        ({"proxy": "socks5://p:1080"}, "extra proxy='socks5://p:1080': expected a proxy URL"),
        ({"proxy": "http://u:hunter2@p:99999"}, "extra proxy='http://u:***@p"),
        ({"proxy": 3128}, "extra proxy=3128"),
        ({"verify": "/no/such/ca.pem"}, "extra verify='/no/such/ca.pem': no readable CA bundle"),
        ({"verify": 1.5}, "extra verify=1.5: expected true, false or a CA bundle path"),
    ],
)
def test_bad_proxy_or_verify_extra_names_it(extras, fragment):
    with pytest.raises(KlingValidationError) as info:
        ClientSettings.from_connection(conn(), extras, "c")
    assert fragment in str(info.value)
    assert "hunter2" not in str(info.value)


def test_budget_paces_after_burst():
    budget = RequestBudget(per_minute=600 / 0.95, burst_seconds=1.0)  # 10/s after the safety factor
    now = 1000.0
    delays = [budget.reserve(now).delay for _ in range(30)]
    assert delays[:10] == [0.0] * 10
    assert delays[10] == pytest.approx(0.1)
    assert delays[29] == pytest.approx(2.0)


def test_default_budget_never_exceeds_the_per_second_quota():
    budget = RequestBudget(per_minute=3000)
    sends = [1000.0 + budget.reserve(1000.0).delay for _ in range(500)]
    worst = max(sum(1 for t in sends if start <= t < start + 1.0) for start in sends)
    assert worst <= 50


def test_budget_pause_holds_every_caller():
    budget = RequestBudget(per_minute=6000)
    budget.pause(5.0, now=100.0)
    assert budget.reserve(now=101.0).delay == pytest.approx(4.0)
    assert budget.reserve(now=101.0).delay >= 4.0
    assert budget.paused_for(now=106.0) == 0.0


# -- submit and query budgets, rate-limit groups, AIMD --------------------------------------------


@pytest.mark.parametrize(
    ("extras", "submits", "queries", "group"),
    [
        ({}, 300.0, 3000.0, "default"),
        ({"rate_limit_group": "vip"}, 1000.0, 10000.0, "vip"),
        ({"rate_limit_group": " SVIP "}, 2000.0, 30000.0, "svip"),
        ({"rate_limit_group": "vip", "max_submits_per_minute": "150"}, 150.0, 10000.0, "vip"),
        ({"max_requests_per_minute": 600}, 300.0, 600.0, "default"),  # existing connections keep working
        (
            {"extra__kling__rate_limit_group": "svip", "extra__kling__max_submits_per_minute": ""},
            2000.0,
            30000.0,
            "svip",
        ),
    ],
)
def test_budgets_follow_the_group_and_the_explicit_numbers(extras, submits, queries, group):
    settings = ClientSettings.from_connection(conn(), extras, "c")
    assert (settings.submits_per_minute, settings.requests_per_minute, settings.rate_limit_group) == (
        submits,
        queries,
        group,
    )
    assert (settings.budgets.submit.per_minute, settings.budgets.query.per_minute) == (submits, queries)


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        ({"rate_limit_group": "gold"}, "extra rate_limit_group='gold': must be one of default, vip, svip"),
        ({"rate_limit_group": 3}, "extra rate_limit_group=3: must be one of default, vip, svip"),
        ({"max_submits_per_minute": "lots"}, "extra max_submits_per_minute='lots': must be a positive number"),
        ({"max_submits_per_minute": -5}, "extra max_submits_per_minute=-5: must be a positive number"),
        ({"max_submits_per_minute": True}, "extra max_submits_per_minute=True: must be a positive number"),
    ],
)
def test_bad_budget_extras_name_the_extra_value_and_what_is_allowed(extras, fragment):
    with pytest.raises(KlingValidationError) as info:
        ClientSettings.from_connection(conn(), extras, "c")
    assert fragment in str(info.value)


def _budgets():
    from airflow_provider_kling.ratelimit import KeyBudgets

    return KeyBudgets(RequestBudget(300), RequestBudget(3000))


@pytest.mark.parametrize(
    ("call_bucket", "category", "limited"),
    [
        ("submit", "async_submit", "submit"),
        ("query", "async_query", "query"),
        ("query", "async_submit", "submit"),  # the header names the bucket, whatever the call
        ("submit", None, "submit"),  # no header: the call's own bucket
        ("query", None, "query"),
        ("query", "something_else", "query"),
    ],
)
def test_a_429_slows_and_pauses_only_the_bucket_it_names(call_bucket, category, limited):
    from airflow_provider_kling.api import Call, read_response

    budgets = _budgets()
    headers = {"Retry-After": "3"} | ({"X-RateLimit-Category": category} if category else {})
    call = Call("GET", "/x", "probe", bucket=call_bucket)
    with pytest.raises(KlingRateLimitError):
        read_response(call, 429, headers, b'{"error": {"code": "rate_limit_exceeded"}}', budgets)
    hit, other = (budgets.submit, budgets.query) if limited == "submit" else (budgets.query, budgets.submit)
    assert 2 < hit.paused_for() <= 3 and hit.decreases == 1 and hit.pace() == hit.per_minute / 2
    assert other.paused_for() == 0 and other.decreases == 0 and other.pace() == other.per_minute


def test_a_503_pauses_the_calls_bucket_without_slowing_it():
    from airflow_provider_kling.api import Call, read_response

    budgets = _budgets()
    with pytest.raises(KlingAPIError):
        read_response(Call.create({}), 503, {"Retry-After": "2"}, b"{}", budgets)
    assert budgets.submit.paused_for() > 1 and budgets.submit.decreases == 0
    assert budgets.query.paused_for() == 0


def test_calls_know_their_bucket():
    from airflow_provider_kling.api import Call

    assert Call.create({}).bucket == "submit"
    assert Call.status("t").bucket == Call("GET", "/v1/balance", "balance").bucket == "query"


def test_aimd_halves_once_per_episode_then_grows_back_to_the_ceiling():
    from airflow_provider_kling.ratelimit import INCREASE_PER_SECOND, MIN_PER_MINUTE, QUIET_SECONDS

    budget = RequestBudget(per_minute=1200)
    budget.throttled(1.0, now=100.0)
    assert budget.pace(now=100.0) == 600
    budget.throttled(1.0, now=100.5)  # answers to requests sent before the decrease
    assert budget.pace(now=100.5) == 600 and budget.decreases == 1
    budget.throttled(1.0, now=101.5)  # still too fast after the pause: halve again
    assert budget.pace(now=101.5) == 300 and budget.decreases == 2
    assert budget.pace(now=101.5 + QUIET_SECONDS) == 300
    ten_more = 101.5 + QUIET_SECONDS + 10
    assert budget.pace(now=ten_more) == pytest.approx(300 + 1200 * INCREASE_PER_SECOND * 10)
    assert budget.pace(now=ten_more + 3600) == 1200
    for i in range(40):
        budget.throttled(None, now=10_000.0 + 2 * i)
    assert budget.pace(now=10_080.0) == MIN_PER_MINUTE


def test_late_429s_to_requests_sent_before_a_decrease_do_not_decrease_again():
    """On a loaded machine the answers to requests sent at the old pace arrive seconds after the
    decrease (event-loop lag); each used to halve again, collapsing the pace to its floor."""
    budget = RequestBudget(per_minute=1200)
    early = budget.reserve(now=100.0)
    budget.throttled(0.0, now=100.0, sent_generation=early.generation)
    assert budget.pace(now=100.0) == 600
    for lag in (2.0, 3.0, 4.0):  # past the hold, but sent before the decrease
        budget.throttled(None, now=100.0 + lag, sent_generation=early.generation)
    assert budget.decreases == 1 and budget.pace(now=104.0) == 600
    fresh = budget.reserve(now=104.0)
    budget.throttled(None, now=104.0, sent_generation=fresh.generation)  # sent at 600/min: still too fast
    assert budget.decreases == 2 and budget.pace(now=104.0) == 300


def test_a_429_carries_the_generation_of_the_slot_it_was_sent_on():
    from airflow_provider_kling.api import Call, read_response
    from airflow_provider_kling.ratelimit import budgets_for

    budgets = budgets_for("http://h", "k", 300, 3000)
    slot = budgets.query.reserve()
    for _ in range(3):
        with pytest.raises(KlingRateLimitError):
            read_response(Call.status("t"), 429, {}, b"{}", budgets, slot)
        time.sleep(0.01)
    budgets.query._hold_until = 0.0  # past any hold: only the generation tells them apart
    with pytest.raises(KlingRateLimitError):
        read_response(Call.status("t"), 429, {}, b"{}", budgets, slot)
    assert budgets.query.decreases == 1


def test_slots_taken_before_a_decrease_are_taken_again_at_the_new_pace():
    budget = RequestBudget(per_minute=600 / 0.95)  # 10/s
    slots = [budget.reserve(now=0.0) for _ in range(20)]
    assert slots[-1].delay == pytest.approx(1.9)
    budget.throttled(None, now=0.05)  # no Retry-After: the pace halves, no pause
    # A slot woken at its time after the decrease goes back in line at 5/s.
    again = [budget.recheck(slot, now=slot.delay) for slot in slots[1:]]
    assert all(s is not None and s.generation == budget.generation for s in again)
    sends = sorted(slot.delay + s.delay for slot, s in zip(slots[1:], again, strict=True))
    assert sends[-1] >= 19 / 5 - 0.3
    fresh = budget.reserve(now=10.0)
    again = budget.recheck(fresh, now=10.0)
    assert fresh is not None and again is not None and (again.delay, again.generation) == (0.0, fresh.generation)


def _drain(budget, slots, start):
    """Each caller sleeps its slot's delay and checks again until it may send; the send times."""
    import heapq

    line = [(start + slot.delay, i, slot) for i, slot in enumerate(slots)]
    heapq.heapify(line)
    sends, checks = [0.0] * len(slots), 0
    while line:
        now, i, slot = heapq.heappop(line)
        if slot.delay == 0:
            sends[i] = now
            continue
        checks += 1
        slot = budget.recheck(slot, now=now)
        heapq.heappush(line, (now + slot.delay, i, slot))
    return sends, checks


def test_a_backlog_reserved_at_a_low_pace_drains_at_the_recovered_pace():
    """Three halvings leave a line reserved at 150 a minute; the pace grows back from 5 s later, and
    the line must drain at the pace of the moment, in order, not at the pace it was reserved at."""
    budget = RequestBudget(per_minute=1200)
    for t in (0.0, 2.0, 4.0):
        budget.throttled(None, now=t)
    assert budget.pace(now=4.0) == 150
    slots = [budget.reserve(now=4.0) for _ in range(100)]
    sends, checks = _drain(budget, slots, 4.0)
    # At 150 a minute the last would go at 4 + 100 / 2.375 = 46 s; growing back, about 26 s.
    assert sends[-1] < 30, sends[-1]
    assert sends == sorted(sends)  # in the order the places were taken
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 60 / (1200 * 0.95) - 1e-9  # never faster than the ceiling
    assert checks < 10 * len(slots)  # woken a few times each, not polled


def test_a_pause_moves_the_whole_line_in_order():
    budget = RequestBudget(per_minute=600 / 0.95)  # 10/s
    slots = [budget.reserve(now=0.0) for _ in range(20)]
    budget.pause(3.0, now=0.5)
    sends, _ = _drain(budget, slots, 0.0)
    assert sends == sorted(sends)
    assert not [t for t in sends if 0.5 <= t < 3.5]  # nothing goes out during the pause
    assert sends[-1] == pytest.approx(1.9 + 3.0)  # the line after it is as long as before, not doubled


# ---------------------------------------------------------------------- NO_PROXY matching, env proxies


def _clear_proxy_env(monkeypatch) -> None:
    for scheme in ("https", "http", "all", "no"):
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("10.0.0.0/8", "http://10.1.2.3/v1/x", True),  # IPv4 CIDR
        ("10.0.0.0/8", "http://11.1.2.3/v1/x", False),
        ("fd00::/8", "http://[fd00::5]:8080/v1/x", True),  # IPv6 CIDR
        ("fd00::/8", "http://[fe80::5]/v1/x", False),
        ("fd00::/8", "http://10.1.2.3/v1/x", False),  # another family
        ("::1", "http://[::1]:8080/v1/x", True),  # bare IPv6
        ("[::1]", "http://[::1]:8080/v1/x", True),  # bracketed IPv6
        ("[::1]:8080", "http://[::1]:8080/v1/x", True),
        ("[::1]:9090", "http://[::1]:8080/v1/x", False),
        ("*.internal", "https://files.internal/v.mp4", True),  # curl/Go style
        ("*.internal", "https://internal/v.mp4", True),
        (".internal", "https://a.files.internal/v.mp4", True),
        ("internal", "https://notinternal/v.mp4", False),
        ("toapis.com", "https://toapis.com./v1/x", True),  # FQDN with a trailing dot
        ("toapis.com.", "https://api.toapis.com/v1/x", True),
        ("toapis.com:443", "https://toapis.com/v1/x", True),  # port: the scheme's default
        ("127.0.0.1:80", "http://127.0.0.1/v1/x", True),
        ("toapis.com:8443", "https://toapis.com/v1/x", False),
        ("toapis.com:8443", "https://toapis.com:8443/v1/x", True),
        ("*", "https://anything.example/v1/x", True),
        ("example.org, *", "https://anything.example/v1/x", True),
        ("localhost 10.0.0.0/8\tfiles.internal", "https://files.internal/v.mp4", True),  # whitespace list
        ("localhost,\n 10.0.0.0/8", "http://10.9.9.9/v1/x", True),
        ("LOCALHOST,Files.Internal", "https://files.internal/v.mp4", True),
        ("0.0.1", "http://127.0.0.1/v1/x", False),  # an IP host never matches a name entry
        ("localhost", "http://127.0.0.1/v1/x", False),
        ("127.0.0.1", "http://localhost/v1/x", False),
        ("10.0.0.0/8", "http://10.example/v1/x", False),
    ],
)
def test_no_proxy_entries(monkeypatch, no_proxy, url, bypassed):
    from airflow_provider_kling.api import proxy_for

    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert proxy_for(url) == (None if bypassed else "http://proxy.corp:3128")


def test_bypasses_proxy_is_a_pure_matcher():
    from airflow_provider_kling.api import bypasses_proxy

    assert bypasses_proxy("[::1]", 8080, "::1")
    assert bypasses_proxy("::1", 8080, "[::1]:8080")
    assert bypasses_proxy("TOAPIS.COM.", 443, "toapis.com")
    assert bypasses_proxy("10.1.2.3", 80, "localhost, 10.0.0.0/8")
    assert not bypasses_proxy("10.1.2.3", 80, "")
    assert not bypasses_proxy("10.1.2.3", 80, "10.1.2.3:443")
    assert not bypasses_proxy("files.internal", None, "files.internal:443")


@pytest.mark.parametrize(
    ("name", "value", "shown", "fragment"),
    [
        ("ALL_PROXY", "socks5://u:hunter2@127.0.0.1:1080", "'socks5://u:***@127.0.0.1:1080'", "expected a proxy"),
        ("https_proxy", "http://proxy:notaport", "'http://proxy:notaport'", "port is not a number"),
        ("HTTPS_PROXY", "u:hunter2@proxy:99999", "'u:***@proxy:99999'", "port is not a number"),
    ],
)
def test_an_unusable_env_proxy_is_refused_naming_the_variable(monkeypatch, name, value, shown, fragment):
    from airflow_provider_kling.api import proxy_for

    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(KlingValidationError) as info:
        proxy_for("https://toapis.com/v1/x")
    message = str(info.value)
    assert f"{name}={shown}" in message, message
    assert fragment in message
    assert "only http:// and https:// proxies are supported" in message
    assert "proxy extra" in message and "NO_PROXY" in message
    assert "hunter2" not in message


def test_an_env_proxy_is_checked_only_when_chosen(monkeypatch):
    from airflow_provider_kling.api import proxy_for

    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.setenv("NO_PROXY", "toapis.com")
    assert proxy_for("https://toapis.com/v1/x") is None  # bypassed: never used, never refused
    assert proxy_for("https://other.example/v1/x", "http://extra:1") == "http://extra:1"  # the extra wins
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "https://lower:2")  # lowercase wins, as in urllib
    assert proxy_for("https://other.example/v1/x") == "https://lower:2"
    with pytest.raises(KlingValidationError, match=r"ALL_PROXY='socks5://127.0.0.1:1080'"):
        proxy_for("http://other.example/v1/x")  # no http proxy: ALL_PROXY is the one chosen
