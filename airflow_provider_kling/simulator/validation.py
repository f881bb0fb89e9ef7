"""Request validation for the simulator's create endpoint, and its localised messages.

The rules are those of the API doc §10 "Validation": one message per rejection, naming the
field. Every user-visible message of the simulator lives in :data:`MESSAGES` (``en`` and ``zh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODEL = "kling-v3"
MODES = ("std", "pro")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
ROLES = ("first_frame", "last_frame", "reference", "reference_image")
MAX_PROMPT = 2500
MAX_IMAGE_URLS = 2
MAX_DURATION_WITH_IMAGES = 10

#: Message catalogue: key -> (English, Chinese). ``{name}`` placeholders are filled by :func:`message`.
MESSAGES: dict[str, tuple[str, str]] = {
    "auth": ("Authentication failed, please check your API key", "身份验证失败，请检查您的 API 密钥"),
    "not_found": ("Task not found", "任务不存在"),
    "file_not_found": ("File not found", "文件不存在"),
    "payment": ("Insufficient balance", "余额不足"),
    "rate_limit": ("Rate limit exceeded", "请求频率超出限制"),
    "unavailable": ("Rate limiter temporarily unavailable, please retry later", "限流服务暂时不可用，请稍后重试"),
    "internal": ("Internal server error", "服务器内部错误"),
    "policy_422": ("The request violates the content policy", "请求内容违反了内容政策"),
    "content_policy": ("Content violates the content policy", "内容违反了内容政策"),
    "generation_failed": ("Generation failed", "生成失败"),
    "policy_message": ("Generation failed: Content violates the content policy", "生成失败: 内容违反了内容政策"),
    "too_large": ("Image too large. Maximum size is 10MB", "图片过大，最大为 10MB"),
    "bad_type": (
        "Unsupported image type. Allowed: JPEG, PNG, WebP, GIF",
        "不支持的图片类型。允许: JPEG, PNG, WebP, GIF",
    ),
    "no_file": ("No file uploaded in field 'file'", "字段 'file' 中没有上传文件"),
    "balance_failure": ("Failed to get token info: record not found", "获取令牌信息失败: 记录不存在"),
    "invalid": ("Invalid parameter '{field}': {reason}", "参数 '{field}' 无效: {reason}"),
    # Reasons used inside "invalid".
    "r_json": ("the request body must be a JSON object", "请求体必须为 JSON 对象"),
    "r_required": ("is required", "为必填项"),
    "r_model": ("must be 'kling-v3'", "必须为 'kling-v3'"),
    "r_prompt": ("must be a non-empty string", "必须为非空字符串"),
    "r_prompt_long": ("must be at most 2500 characters", "不能超过 2500 个字符"),
    "r_one_of": ("must be one of: {allowed}", "必须为以下之一: {allowed}"),
    "r_duration": ("must be an integer, one of: {allowed}", "必须为整数，取值之一: {allowed}"),
    "r_duration_images": ("must be at most 10 when input images are given", "提供输入图片时不能超过 10"),
    "r_bool": ("must be a boolean", "必须为布尔值"),
    "r_string": ("must be a string", "必须为字符串"),
    "r_business_id": ("must be a non-empty string of at most 256 characters", "必须为不超过 256 个字符的非空字符串"),
    "r_object": ("must be an object", "必须为对象"),
    "r_list": ("must be a list", "必须为列表"),
    "r_too_many": ("must contain at most {n} items", "最多包含 {n} 项"),
    "r_url": (
        "must be a public http(s) URL (no data: or base64)",
        "必须为公开的 http(s) URL（不支持 data: 或 base64）",
    ),
    "r_role_twice": ("allows at most one {role}", "最多只能有一个 {role}"),
    "r_mixed": (
        "cannot be combined with image_with_roles or reference_images",
        "不能与 image_with_roles 或 reference_images 同时使用",
    ),
}


def message(key: str, language: str = "en", **params: Any) -> str:
    """Return the message ``key`` in ``language`` (``en`` or ``zh``).

    :param key: a key of :data:`MESSAGES`.
    :param language: ``"en"`` or ``"zh"``; anything else falls back to English.
    :param params: values for the ``{name}`` placeholders.
    """
    en, zh = MESSAGES[key]
    return (zh if language == "zh" else en).format(**params)


class ValidationFailure(Exception):
    """A create body broke a rule.

    :param field: the offending field, e.g. ``"duration"`` or ``"metadata.watermark"``.
    :param reason: a ``r_*`` key of :data:`MESSAGES`.
    :param params: placeholder values for the reason.
    """

    def __init__(self, field: str, reason: str, **params: Any) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.params = params

    def render(self, language: str) -> str:
        """The full localised message, e.g. ``Invalid parameter 'duration': must be ...``."""
        return message("invalid", language, field=self.field, reason=message(self.reason, language, **self.params))


@dataclass(frozen=True)
class CreateRequest:
    """The parts of a valid create body that the simulator keeps."""

    model: str
    prompt: str
    mode: str
    duration: int
    aspect_ratio: str
    audio: bool
    business_id: str | None
    image_count: int


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://")) and len(value) > 8


def _url_list(body: dict[str, Any], field: str, limit: int | None = None) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailure(field, "r_list")
    if limit is not None and len(value) > limit:
        raise ValidationFailure(field, "r_too_many", n=limit)
    for index, item in enumerate(value):
        if not _is_url(item):
            raise ValidationFailure(f"{field}[{index}]", "r_url")
    return list(value)


def _roles(body: dict[str, Any]) -> int:
    value = body.get("image_with_roles")
    if value is None:
        return 0
    if not isinstance(value, list):
        raise ValidationFailure("image_with_roles", "r_list")
    seen: set[str] = set()
    for index, item in enumerate(value):
        where = f"image_with_roles[{index}]"
        if not isinstance(item, dict):
            raise ValidationFailure(where, "r_object")
        if not _is_url(item.get("url")):
            raise ValidationFailure(f"{where}.url", "r_url")
        role = item.get("role")
        if role not in ROLES:
            raise ValidationFailure(f"{where}.role", "r_one_of", allowed=", ".join(ROLES))
        if role in ("first_frame", "last_frame"):
            if role in seen:
                raise ValidationFailure("image_with_roles", "r_role_twice", role=role)
            seen.add(role)
    return len(value)


def _choice(body: dict[str, Any], field: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(field, default)
    if value not in allowed:
        raise ValidationFailure(field, "r_one_of", allowed=", ".join(allowed))
    return str(value)


def _metadata(body: dict[str, Any]) -> str | None:
    """Check ``metadata`` and return its ``client_business_id`` alias, if any."""
    meta = body.get("metadata")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise ValidationFailure("metadata", "r_object")
    if "watermark" in meta and not isinstance(meta["watermark"], bool):
        raise ValidationFailure("metadata.watermark", "r_bool")
    if "negative_prompt" in meta and not isinstance(meta["negative_prompt"], str):
        raise ValidationFailure("metadata.negative_prompt", "r_string")
    return _business_id(meta.get("client_business_id"), "metadata.client_business_id")


def _business_id(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise ValidationFailure(field, "r_business_id")
    return value


def validate_create(body: Any, durations: frozenset[int]) -> CreateRequest:
    """Validate a create body; unknown fields are ignored.

    :param body: the decoded JSON body.
    :param durations: the accepted durations (``{5, 10, 15}`` or ``3..15``).
    :raises ValidationFailure: on the first broken rule.
    """
    if not isinstance(body, dict):
        raise ValidationFailure("body", "r_json")
    if "model" not in body:
        raise ValidationFailure("model", "r_required")
    if body["model"] != MODEL:
        raise ValidationFailure("model", "r_model")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationFailure("prompt", "r_prompt")
    if len(prompt) > MAX_PROMPT:
        raise ValidationFailure("prompt", "r_prompt_long")
    mode = _choice(body, "mode", MODES, "std")
    aspect_ratio = _choice(body, "aspect_ratio", ASPECT_RATIOS, "16:9")
    audio = body.get("audio", False)
    if not isinstance(audio, bool):
        raise ValidationFailure("audio", "r_bool")
    image_urls = _url_list(body, "image_urls", MAX_IMAGE_URLS)
    v3_count = len(_url_list(body, "reference_images")) + _roles(body)
    if image_urls and v3_count:
        raise ValidationFailure("image_urls", "r_mixed")
    images = len(image_urls) + v3_count
    duration = body.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in durations:
        raise ValidationFailure("duration", "r_duration", allowed=describe_durations(durations))
    if images and duration > MAX_DURATION_WITH_IMAGES:
        raise ValidationFailure("duration", "r_duration_images")
    alias = _metadata(body)
    business_id = _business_id(body.get("client_business_id"), "client_business_id") or alias
    return CreateRequest(MODEL, prompt, mode, duration, aspect_ratio, audio, business_id, images)


def describe_durations(durations: frozenset[int]) -> str:
    """``"5, 10, 15"`` or, for a contiguous range of more than three values, ``"3-15"``."""
    ordered = sorted(durations)
    if len(ordered) > 3 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(value) for value in ordered)
