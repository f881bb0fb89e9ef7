"""Hostile operator input: each rejected with a message naming the field, and no request sent."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_kling.exceptions import KlingError, KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor
from tests.conftest import connection_uri

START = pendulum.datetime(2026, 1, 1, tz="UTC")

PARSE_TIME = [
    ("prompt", {"prompt": ""}),
    ("prompt", {"prompt": "   \n\t "}),
    ("prompt", {"prompt": "x" * 2501}),
    ("prompt", {"prompt": "nul\x00byte"}),
    ("prompt", {"prompt": "escape\x1b[31m"}),
    ("prompt", {"prompt": 12345}),
    ("prompt", {"prompt": ["a", "list"]}),
    ("mode", {"mode": "hd"}),
    ("mode", {"mode": ""}),
    ("duration", {"duration": 3}),
    ("duration", {"duration": 20}),
    ("duration", {"duration": "5s"}),
    ("duration", {"duration": 7.5}),
    ("duration", {"duration": False}),
    ("duration", {"duration": 15, "image_urls": ["https://example.com/a.jpg"]}),
    ("aspect_ratio", {"aspect_ratio": "21:9"}),
    ("aspect_ratio", {"aspect_ratio": 1.77}),
    ("image_urls", {"image_urls": "https://example.com/a.jpg"}),
    ("image_urls", {"image_urls": ["https://a.com/1.jpg", "https://a.com/2.jpg", "https://a.com/3.jpg"]}),
    ("image_urls", {"image_urls": ["data:image/jpeg;base64,/9j/4AAQSkZJRg=="]}),
    ("image_urls", {"image_urls": ["javascript:alert(1)"]}),
    ("image_urls", {"image_urls": ["file:///etc/passwd"]}),
    ("image_urls", {"image_urls": ["./local/image.png"]}),
    ("image_urls", {"image_urls": ["https://exa mple.com/a b.jpg"]}),
    ("image_urls", {"image_urls": ["https://example.com/" + "a" * 3000]}),
    ("image_urls", {"image_urls": [None]}),
    ("audio", {"audio": "yes"}),
    ("audio", {"audio": 0}),
    ("watermark", {"watermark": "no"}),
    ("negative_prompt", {"negative_prompt": {"not": "text"}}),
    ("negative_prompt", {"negative_prompt": "x" * 2501}),
    ("model", {"model": "kling-v2-1"}),
    ("extra_body", {"extra_body": ["not", "a", "dict"]}),
    ("extra_body", {"extra_body": {"model": "other"}}),
    ("extra_body", {"extra_body": {"client_business_id": "kl_mine"}}),
    (
        "image_urls",
        {"image_urls": ["https://a.com/1.jpg"], "extra_body": {"reference_images": ["https://a.com/2.jpg"]}},
    ),
    ("extra_body.image_with_roles", {"extra_body": {"image_with_roles": "https://a.com/1.jpg"}}),
    ("poll_interval", {"poll_interval": 0}),
    ("poll_interval", {"poll_interval": -1}),
    ("poll_interval", {"poll_interval": "fast"}),
    ("timeout", {"timeout": 0}),
    ("timeout", {"timeout": timedelta(seconds=-5)}),
    ("submit_timeout", {"submit_timeout": "never"}),
    # Waits that never end: refused at parse, not an OverflowError when deferring.
    ("timeout", {"timeout": float("inf")}),
    ("timeout", {"timeout": 1e30}),
    ("timeout", {"timeout": timedelta(days=3650)}),
    ("poll_interval", {"poll_interval": float("inf")}),
    ("submit_timeout", {"submit_timeout": float("nan")}),
]


@pytest.mark.parametrize(("field", "kwargs"), PARSE_TIME, ids=[f"{f}-{i}" for i, (f, _) in enumerate(PARSE_TIME)])
def test_rejected_at_dag_parse(sim, field, kwargs):
    values = {"task_id": "gen", "prompt": "a cat", **kwargs}
    with pytest.raises(KlingValidationError) as info:
        KlingGenerateVideoOperator(**values)
    assert field in str(info.value)
    assert sim.stats()["requests"]["total"] == 0


def test_submit_operator_rejects_too(sim):
    with pytest.raises(KlingValidationError, match="mode='ultra'"):
        KlingSubmitOperator(task_id="s", prompt="p", mode="ultra")


def test_all_problems_in_one_error(sim):
    with pytest.raises(KlingValidationError) as info:
        KlingSubmitOperator(task_id="s", prompt="", mode="x", duration=1, aspect_ratio="x", audio="x")
    assert len(info.value.problems) == 5


@pytest.mark.parametrize(
    ("field", "params"),
    [
        ("duration", {"duration": "20"}),
        ("duration", {"duration": "True"}),
        ("mode", {"mode": "cinema"}),
        ("prompt", {"prompt": ""}),
        ("image_urls[0]", {"image": "ftp://example.com/a.jpg"}),
        ("audio", {"audio": "sometimes"}),
    ],
)
def test_templated_values_rendering_to_bad_values(dags, sim, request, field, params):
    defaults = {
        "duration": "5",
        "mode": "std",
        "prompt": "a cat",
        "image": "https://example.com/a.jpg",
        "audio": "false",
    }
    dag_id = "hostile_" + "".join(c if c.isalnum() else "_" for c in request.node.name)
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, params={**defaults, **params}) as dag:
        KlingSubmitOperator(
            task_id="submit",
            prompt="{{ params.prompt }}",
            mode="{{ params.mode }}",
            duration="{{ params.duration }}",
            image_urls=["{{ params.image }}"],
            audio="{{ params.audio }}",
            retries=2,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "failed"}
    assert dags.tries(run, "submit") == 1
    assert sim.stats()["requests"]["total"] == 0


@pytest.mark.parametrize(
    ("host", "fragment"),
    [("ftp://toapis.com", "host='ftp://toapis.com'"), ("http://exa mple.com", "host="), ("http://h:99999", "port")],
)
def test_bad_connection_host(sim, monkeypatch, host, fragment):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(host))
    hook = KlingHook()
    with pytest.raises(KlingValidationError, match=fragment):
        hook.get_task("video_x")
    assert sim.stats()["requests"]["total"] == 0


def test_bad_connection_extras(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, timeout="never"))
    with pytest.raises(KlingValidationError, match="extra timeout='never'"):
        KlingHook().get_task("video_x")
    assert sim.stats()["requests"]["total"] == 0


def test_missing_key(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, key=""))
    with pytest.raises(KlingError, match="no API key"):
        KlingHook().submit_video(KlingSubmitOperator(task_id="x", prompt="p").build_request(), "kl_x")
    assert sim.stats()["requests"]["total"] == 0


def test_sensor_bad_intervals(sim):
    with pytest.raises(KlingValidationError, match="poke_interval"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", poke_interval=0)
    with pytest.raises(KlingValidationError, match="timeout"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", timeout=-1)
    with pytest.raises(KlingValidationError, match=r"timeout=inf: .* at most"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", timeout=float("inf"))
    with pytest.raises(KlingValidationError, match="poke_interval"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", poke_interval=float("inf"))


def test_upload_paths(sim, tmp_path):
    hook = KlingHook()
    (tmp_path / "dir.png").mkdir()
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as f:
        f.write(b"\xff\xd8\xff")
        f.truncate(11 * 1024 * 1024)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"MZ\x90\x00 an executable")
    for path, fragment in [
        (tmp_path / "nope.png", "no such file"),
        (tmp_path / "dir.png", "no such file"),
        (huge, "upload limit"),
        (fake, "not a JPEG"),
    ]:
        with pytest.raises(KlingValidationError, match=fragment) as info:
            hook.upload_image(path)
        assert "image_path" in str(info.value)
    assert sim.stats()["requests"]["total"] == 0
