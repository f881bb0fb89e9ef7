"""Property-based: whatever the server sends, the parsers raise only Kling errors (or succeed)."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kling.api import Call, parse_retry_after, read_response
from airflow_provider_kling.exceptions import KlingError, error_from_response
from airflow_provider_kling.models import KlingTask
from airflow_provider_kling.ratelimit import KeyBudgets, RequestBudget
from airflow_provider_kling.wait import WaitState, result_from_event

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
task_keys = st.sampled_from(
    [
        "id",
        "task_id",
        "status",
        "progress",
        "created_at",
        "completed_at",
        "expires_at",
        "result",
        "url",
        "error",
        "model",
        "client_business_id",
        "metadata",
    ]
)
task_like = st.dictionaries(
    task_keys, json_values | st.fixed_dictionaries({"data": st.lists(json_values, max_size=2)}), max_size=10
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | task_like.map(lambda v: json.dumps(v).encode())
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "X-RateLimit-Reset"]), st.text(max_size=40), max_size=3
)


@settings(max_examples=400, deadline=None)
@given(data=json_values | task_like)
def test_task_parser(data):
    try:
        task = KlingTask.from_api(data)
    except KlingError:
        return
    json.dumps(task.to_dict())
    json.dumps(task.to_result())
    state = WaitState(task.id, None, 2e9)
    event = state.on_task(task)
    if event is not None:
        json.dumps(event)
        with contextlib.suppress(KlingError):
            result_from_event(event)


@settings(max_examples=400, deadline=None)
@given(status=st.integers(100, 599), body=bodies, hdrs=headers)
def test_response_reader(status, body, hdrs):
    try:
        read_response(
            Call("GET", "/x", "status", missing_ok=True),
            status,
            hdrs,
            body,
            KeyBudgets(RequestBudget(), RequestBudget()),
        )
    except KlingError as err:
        assert str(err)


@settings(max_examples=300, deadline=None)
@given(status=st.integers(400, 599), body=bodies)
def test_error_envelopes(status, body):
    assert isinstance(error_from_response(status, body), KlingError)


@given(value=st.text(max_size=40) | st.none())
def test_retry_after_never_raises(value):
    seconds = parse_retry_after(value)
    assert seconds is None or 0 <= seconds <= 600


@settings(max_examples=300, deadline=None)
@given(
    event=json_values
    | st.fixed_dictionaries(
        {"status": st.sampled_from(["success", "failed", "error", "timeout"]), "task": task_like | json_values}
    )
)
def test_event_validator(event):
    try:
        result = result_from_event(event)
    except KlingError:
        return
    assert result["status"] == "completed" and result["video_url"]
