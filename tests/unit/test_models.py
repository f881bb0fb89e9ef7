"""Request validation and task parsing: every rule of the kling-v3 API, without HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kling.exceptions import KlingAPIError, KlingValidationError
from airflow_provider_kling.models import (
    KlingTask,
    KlingVideoRequest,
    TaskStatus,
    collect_problems,
    image_fields,
    is_content_policy,
    normalise_status,
    parse_progress,
)

URL = "https://example.com/a.jpg"
URL2 = "https://example.com/b.jpg"


def build(**kw):
    return KlingVideoRequest.from_kwargs(**{"prompt": "a cat", **kw})


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("prompt", "", "non-empty"),
        ("prompt", "   ", "non-empty"),
        ("prompt", None, "must be a string"),
        ("prompt", 42, "must be a string"),
        ("prompt", "x" * 2501, "at most 2500 characters, got 2501"),
        ("prompt", "bad\x00null", "control character"),
        ("prompt", "bell\x07", "control character"),
        ("mode", "ultra", "std, pro"),
        ("mode", "STD", "std, pro"),
        ("mode", None, "std, pro"),
        ("duration", 7, "5, 10 or 15"),
        ("duration", 0, "5, 10 or 15"),
        ("duration", -5, "5, 10 or 15"),
        ("duration", 5.0, "5, 10 or 15"),
        ("duration", True, "5, 10 or 15"),
        ("duration", "ten", "5, 10 or 15"),
        ("duration", None, "5, 10 or 15"),
        ("aspect_ratio", "4:3", "16:9, 9:16, 1:1"),
        ("aspect_ratio", "16x9", "16:9, 9:16, 1:1"),
        ("image_urls", URL, "list"),
        ("image_urls", [URL, URL2, URL], "at most 2"),
        ("image_urls", ["data:image/png;base64,iVBORw0KGgo="], "data:/base64"),
        ("image_urls", ["iVBORw0KGgo" * 30], "data:/base64"),
        ("image_urls", ["ftp://example.com/a.jpg"], "http:// or https://"),
        ("image_urls", ["file:///etc/passwd"], "http:// or https://"),
        ("image_urls", ["/tmp/a.jpg"], "http:// or https://"),
        ("image_urls", ["https://exa mple.com/a.jpg"], "without spaces"),
        ("image_urls", [123], "URL string"),
        ("image_urls", {"a": URL}, "list"),
        ("audio", "yes", "True or False"),
        ("audio", 1, "True or False"),
        ("audio", None, "True or False"),
        ("watermark", "maybe", "True, False or None"),
        ("negative_prompt", 5, "must be a string"),
        ("model", "kling-v2", "kling-v3"),
        ("extra_body", "not a dict", "dict"),
        ("extra_body", {"prompt": "override"}, "must not set prompt"),
        ("extra_body", {"duration": 15}, "must not set duration"),
        ("extra_body", {"metadata": "x"}, "must be a dict"),
        ("extra_body", {"image_with_roles": [{"url": URL, "role": "middle"}]}, "first_frame"),
        ("extra_body", {"image_with_roles": [{"url": URL}]}, "'url' and 'role'"),
        ("extra_body", {"reference_images": ["data:x"]}, "data:/base64"),
        (
            "extra_body",
            {"image_with_roles": [{"url": URL, "role": "first_frame"}, {"url": URL2, "role": "first_frame"}]},
            "at most one first_frame",
        ),
    ],
)
def test_each_rule_names_field_value_and_allowed(field, value, fragment):
    with pytest.raises(KlingValidationError) as info:
        build(**{field: value})
    message = str(info.value)
    assert field in message
    assert fragment in message


def test_all_problems_reported_at_once():
    with pytest.raises(KlingValidationError) as info:
        KlingVideoRequest.from_kwargs(prompt="", mode="x", duration=3, aspect_ratio="2:1", audio="no")
    assert len(info.value.problems) == 5
    assert {p.split("=")[0] for p in info.value.problems} == {"prompt", "mode", "duration", "aspect_ratio", "audio"}


@pytest.mark.parametrize("images", [[URL], [URL, URL2]])
def test_fifteen_seconds_only_without_images(images):
    with pytest.raises(KlingValidationError, match=r"duration=15: must be 5 or 10 with input images"):
        build(duration=15, image_urls=images)
    assert build(duration=10, image_urls=images).duration == 10


def test_fifteen_seconds_with_v3_images_is_rejected_under_duration():
    extra = {"image_with_roles": [{"url": URL, "role": "first_frame"}]}
    with pytest.raises(KlingValidationError, match="duration=15"):
        build(duration=15, extra_body=extra)


def test_image_urls_and_v3_fields_cannot_mix():
    with pytest.raises(KlingValidationError, match=r"image_urls.*cannot be combined"):
        build(image_urls=[URL], extra_body={"reference_images": [URL2]})


@pytest.mark.parametrize(("raw", "expected"), [("10", 10), (" 15 ", 15), (5, 5), (10, 10)])
def test_rendered_digit_strings_count_as_ints(raw, expected):
    assert build(duration=raw).duration == expected


@pytest.mark.parametrize(("raw", "expected"), [(True, True), ("true", True), ("False", False), (False, False)])
def test_rendered_bools(raw, expected):
    assert build(audio=raw).audio is expected


def test_prompt_limit_counts_code_points():
    assert build(prompt="猫" * 2500).prompt == "猫" * 2500
    with pytest.raises(KlingValidationError, match="2501"):
        build(prompt="猫" * 2501)


def test_body_v2_form_and_metadata():
    req = build(
        mode="pro",
        duration="10",
        audio=True,
        image_urls=(URL, URL2),
        negative_prompt="blur",
        watermark=False,
        extra_body={"trace_id": "t1", "metadata": {"style": "x"}},
    )
    body = req.to_body("kl_abc")
    assert body == {
        "model": "kling-v3",
        "prompt": "a cat",
        "mode": "pro",
        "duration": 10,
        "aspect_ratio": "16:9",
        "audio": True,
        "client_business_id": "kl_abc",
        "image_urls": [URL, URL2],
        "metadata": {"negative_prompt": "blur", "watermark": False, "style": "x"},
        "trace_id": "t1",
    }
    assert req.billed_as == "1080P+Sound"


def test_body_omits_empty_images_and_metadata():
    body = build().to_body("kl_x")
    assert "image_urls" not in body and "metadata" not in body
    assert body["duration"] == 5 and body["audio"] is False


def test_extra_metadata_may_not_duplicate_kwargs():
    with pytest.raises(KlingValidationError, match="duplicates the negative_prompt"):
        build(negative_prompt="a", extra_body={"metadata": {"negative_prompt": "b"}})


def test_v3_mapping_is_frames_never_references():
    assert image_fields([URL], wire="v3") == {"image_with_roles": [{"url": URL, "role": "first_frame"}]}
    assert image_fields([URL, URL2], wire="v3")["image_with_roles"][1] == {"url": URL2, "role": "last_frame"}
    assert image_fields([]) == {}


def test_jinja_values_are_skipped_at_parse_and_checked_after_render():
    fields = {"prompt": "{{ params.p }}", "duration": "{{ params.d }}", "image_urls": ["{{ x }}", "ftp://bad"]}
    problems = collect_problems(fields, skip_jinja=True)
    assert problems == ["image_urls[1]='ftp://bad': must be a public http:// or https:// URL"]
    with pytest.raises(KlingValidationError):
        KlingVideoRequest.from_kwargs(prompt="ok", duration="{{ params.d }}")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", TaskStatus.QUEUED),
        ("SUBMITTED", TaskStatus.QUEUED),
        ("pending", TaskStatus.QUEUED),
        ("in_progress", TaskStatus.IN_PROGRESS),
        ("Processing", TaskStatus.IN_PROGRESS),
        ("completed", TaskStatus.COMPLETED),
        ("SUCCESS", TaskStatus.COMPLETED),
        ("succeeded", TaskStatus.COMPLETED),
        ("succeed", TaskStatus.COMPLETED),
        ("failed", TaskStatus.FAILED),
        ("FAILURE", TaskStatus.FAILED),
        ("error", TaskStatus.FAILED),
        ("cancelled", TaskStatus.FAILED),
        ("canceled", TaskStatus.FAILED),
    ],
)
def test_status_vocabulary(raw, status):
    assert normalise_status(raw) is status


@pytest.mark.parametrize("raw", [None, "", "weird", 3, "done?"])
def test_unknown_status_is_running_never_done(raw):
    task = KlingTask.from_api({"id": "t", "status": raw})
    assert task.status is TaskStatus.IN_PROGRESS and not task.is_terminal
    assert task.is_unknown_status


@pytest.mark.parametrize(
    ("raw", "value"), [(65, 65), (65.7, 65), ("65%", 65), (" 40 % ", 40), (None, 0), (150, 100), (-3, 0), ("x", 0)]
)
def test_progress_is_lenient_and_clamped(raw, value):
    assert parse_progress(raw) == value


def test_completed_task_parsing_and_result():
    task = KlingTask.from_api(
        {
            "id": "video_1",
            "client_business_id": "kl_1",
            "model": "kling-v3",
            "status": "completed",
            "progress": 100,
            "created_at": 1768380224,
            "completed_at": 1768380514,
            "expires_at": 1768466914,
            "result": {"type": "video", "data": [{"url": "https://f/x.mp4", "format": "mp4"}]},
        }
    )
    assert task.video_url == "https://f/x.mp4"
    assert task.expires_at == datetime(2026, 1, 15, 8, 48, 34, tzinfo=timezone.utc)
    result = task.to_result()
    assert result["expires_at"] == "2026-01-15T08:48:34Z"
    assert result["created_at"] == "2026-01-14T08:43:44Z"
    assert result["status"] == "completed" and result["client_business_id"] == "kl_1"
    assert KlingTask.from_dict(task.to_dict()) == task


def test_expires_at_falls_back_to_completed_plus_24h_and_legacy_url():
    task = KlingTask.from_api({"task_id": 7, "status": "SUCCESS", "completed_at": 1000, "url": "https://f/y.mp4"})
    assert task.id == "7"
    assert task.expires_at - task.completed_at == timedelta(hours=24)
    assert task.video_url == "https://f/y.mp4"
    assert KlingTask.from_api({"id": "x", "status": "completed"}).to_result()["expires_at"] is None


def test_failed_task_error_fields():
    task = KlingTask.from_api({"id": "v", "status": "failed", "error": {"code": 500, "message": "boom"}})
    assert (task.error_code, task.error_message) == ("500", "boom")


@pytest.mark.parametrize("body", [[], "x", None, {"status": "queued"}, {"id": ""}, {"id": True}])
def test_malformed_task_bodies_raise_kling_errors(body):
    with pytest.raises(KlingAPIError, match="malformed"):
        KlingTask.from_api(body)


@pytest.mark.parametrize(
    ("code", "message", "policy"),
    [
        ("content_policy_violation", "anything", True),
        ("generation_failed", "Generation failed: Content violates the content policy", True),
        ("generation_failed", "生成失败: 内容违反了内容政策", True),
        ("generation_failed", "生成失敗: 內容違反了內容政策", True),
        ("generation_failed", "Ошибка генерации: контент нарушает политику в отношении контента", True),
        (None, "Content policy violation", True),
        ("generation_failed", "Generation failed", False),
        ("generation_failed", "GPU out of memory", False),
        ("generation_failed", "policy update scheduled", False),
        ("internal_error", "content policy", False),
        ("timeout", "Content violates the content policy", False),
    ],
)
def test_content_policy_classifier(code, message, policy):
    assert is_content_policy(code, message) is policy


class Resolvable:
    """Stands in for an XComArg/MappedArgument: anything Airflow resolves at run time."""

    def resolve(self, context):  # pragma: no cover - never called here
        return "resolved"


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (None, True),
        ("x", True),
        (5, True),
        (1.5, True),
        (True, True),
        (["a", ("b", 1)], True),
        ({"k": [1, {"j": None}]}, True),
        (Resolvable(), False),
        ([URL, Resolvable()], False),
        ({"metadata": Resolvable()}, False),
        (object(), False),
    ],
)
def test_plain_literal_detection(value, plain):
    from airflow_provider_kling.models import is_plain_literal

    assert is_plain_literal(value) is plain


def test_unresolved_values_are_skipped_at_parse_but_literals_are_checked():
    later = Resolvable()
    fields = {
        "prompt": later,
        "mode": later,
        "duration": later,
        "aspect_ratio": later,
        "audio": later,
        "watermark": later,
        "negative_prompt": later,
        "model": later,
        "extra_body": {"metadata": later},
        "image_urls": [later, later],
    }
    assert collect_problems(fields, skip_jinja=True) == []
    problems = collect_problems({"prompt": later, "image_urls": [later, "data:x"], "mode": "ultra"}, skip_jinja=True)
    assert len(problems) == 2 and "mode=" in problems[0] and "image_urls[1]" in problems[1]
    with pytest.raises(KlingValidationError, match="must be a string"):
        KlingVideoRequest.from_kwargs(prompt=later)


def test_digest_covers_every_field_sent_and_nothing_else():
    base = build()
    assert base.digest() == build().digest() and len(base.digest()) == 64
    changed = [
        build(prompt="a dog"),
        build(mode="pro"),
        build(duration=10),
        build(aspect_ratio="1:1"),
        build(image_urls=[URL]),
        build(audio=True),
        build(negative_prompt="blur"),
        build(watermark=True),
        build(extra_body={"seed": 1}),
    ]
    assert len({base.digest(), *(r.digest() for r in changed)}) == len(changed) + 1
    assert build(duration="5").digest() == base.digest()  # the same body is the same request
    # Images uploaded to fresh URLs keep one digest when their contents' digests stand in.
    one, two = build(image_urls=[URL]), build(image_urls=[URL2])
    assert one.digest() != two.digest()
    assert one.digest(image_digests=["sha-a"]) == two.digest(image_digests=["sha-a"])
    assert one.digest(image_digests=["sha-a"]) != one.digest(image_digests=["sha-b"])


@pytest.mark.parametrize(
    ("code", "invalid"),
    [
        ("InvalidParameter", True),
        ("invalid_parameter", True),
        ("INVALID-PARAMETER", True),
        ("invalid_request", True),
        ("invalid_image", True),
        ("image_format_invalid", True),
        ("ImageSizeInvalid", True),
        ("generation_failed", False),
        ("content_policy_violation", False),
        ("internal_error", False),
        ("invalid_api_key", False),
        (None, False),
        ("", False),
    ],
)
def test_input_invalid_classifier(code, invalid):
    from airflow_provider_kling.models import is_input_invalid

    assert is_input_invalid(code) is invalid
    task = KlingTask.from_api({"id": "v", "status": "failed", "error": {"code": code, "message": "m"}})
    assert task.is_input_invalid is invalid and task.is_final_failure is (invalid or code == "content_policy_violation")


def test_unknown_status_with_error_object_is_failed():
    task = KlingTask.from_api({"id": "v", "status": "exploded", "error": {"code": "internal", "message": "boom"}})
    assert task.status is TaskStatus.FAILED and task.error_code == "internal"
    assert KlingTask.from_api({"id": "v", "status": "exploded", "error": {}}).status is TaskStatus.IN_PROGRESS
    assert KlingTask.from_api({"id": "v", "status": "exploded"}).status is TaskStatus.IN_PROGRESS
