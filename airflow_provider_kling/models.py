"""Request validation and task parsing for the kling-v3 API.

:class:`KlingVideoRequest` knows every rule of a create request and builds its JSON body;
:class:`KlingTask` is a parsed task with a normalised status. Both are pure: no HTTP, no Airflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_kling.exceptions import KlingAPIError, KlingValidationError

SUPPORTED_MODELS = ("kling-v3",)
MODES = {"std": "720P", "pro": "1080P"}
DURATIONS = (5, 10, 15)
MAX_DURATION_WITH_IMAGES = 10
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MAX_PROMPT_CHARS = 2500
MAX_IMAGES = 2
MAX_URL_CHARS = 2048
IMAGE_ROLES = ("first_frame", "last_frame", "reference", "reference_image")
V3_IMAGE_FIELDS = ("image_with_roles", "reference_images")
#: Keys of ``extra_body`` that would silently override a validated keyword argument.
RESERVED_BODY_KEYS = frozenset(
    {"model", "prompt", "mode", "duration", "aspect_ratio", "image_urls", "audio", "client_business_id"}
)
URL_TTL_FALLBACK = timedelta(hours=24)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_jinja(value: Any) -> bool:
    """Whether ``value`` is a string that still holds a Jinja expression or statement."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def is_plain_literal(value: Any) -> bool:
    """Whether ``value`` is fully known at DAG parse: ``None``/bool/int/float/str, or a list, tuple
    or dict of those (recursively). Anything else (an ``XComArg``, a list holding one, a
    ``MappedArgument``, any object Airflow resolves at run time) is checked after resolution."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain_literal(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_literal(v) for k, v in value.items())
    return False


def unresolved(value: Any) -> bool:
    """Whether ``value`` is not known yet: it holds Jinja, or is not a plain literal."""
    return has_jinja(value) or not is_plain_literal(value)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return (
        text if len(text) <= limit else f"{text[:limit]}... ({len(value) if hasattr(value, '__len__') else '?'} chars)"
    )


def _problem(name: str, value: Any, allowed: str) -> str:
    return f"{name}={_show(value)}: {allowed}"


# --------------------------------------------------------------------------- field rules


def _check_prompt(value: Any, name: str = "prompt", required: bool = True) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, str):
        return [_problem(name, value, f"must be a string, got {type(value).__name__}")]
    if required and not value.strip():
        return [_problem(name, value, "must be a non-empty string")]
    problems = []
    if len(value) > MAX_PROMPT_CHARS:
        problems.append(_problem(name, value, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"))
    bad = _CONTROL.search(value)
    if bad:
        problems.append(
            _problem(
                name,
                value,
                f"contains control character {bad.group()!r} at {bad.start()}; "
                "only tab, newline and carriage return are allowed",
            )
        )
    return problems


def _check_choice(name: str, value: Any, choices: Sequence[str], what: str = "") -> list[str]:
    if isinstance(value, str) and value in choices:
        return []
    return [_problem(name, value, f"must be one of {', '.join(choices)}{what}")]


def coerce_duration(value: Any) -> int | None:
    """An ``int`` or a digit string (as a rendered template gives) as ``int``; bools never count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def coerce_bool(value: Any) -> bool | None:
    """A real ``bool``, or the strings ``"true"``/``"false"`` that a rendered template gives."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def check_url(name: str, value: Any) -> list[str]:
    """A public ``http(s)`` URL: no ``data:``/base64 payloads, no local paths, no whitespace."""
    if not isinstance(value, str):
        return [_problem(name, value, f"must be an http(s) URL string, got {type(value).__name__}")]
    if value.strip().lower().startswith("data:") or (len(value) > 200 and "://" not in value):
        return [
            _problem(
                name,
                value,
                "data:/base64 images are not accepted; upload local files with "
                "KlingHook.upload_image and pass the returned URL",
            )
        ]
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return [_problem(name, value, "must be a public http:// or https:// URL")]
    if len(value) > MAX_URL_CHARS or any(c.isspace() for c in value) or _CONTROL.search(value):
        return [
            _problem(
                name,
                value,
                f"must be at most {MAX_URL_CHARS} characters without spaces or control characters",
            )
        ]
    return []


def _image_list(name: str, value: Any, skip_jinja: bool) -> tuple[list[str], int | None]:
    """Problems of an ``image_urls`` value and the number of images (``None`` when unknown)."""
    if value is None:
        return [], 0
    if skip_jinja and not isinstance(value, (list, tuple)) and unresolved(value):
        return [], None
    if not isinstance(value, (list, tuple)):
        hint = " (a single URL must be wrapped in a list)" if isinstance(value, str) else ""
        return [_problem(name, value, f"must be a list of 0-{MAX_IMAGES} http(s) URLs{hint}")], None
    problems = []
    if len(value) > MAX_IMAGES:
        problems.append(_problem(name, value, f"at most {MAX_IMAGES} URLs (first frame, last frame), got {len(value)}"))
    for i, item in enumerate(value):
        if not (skip_jinja and unresolved(item)):
            problems += check_url(f"{name}[{i}]", item)
    return problems, len(value)


def _path_list(value: Any, skip_jinja: bool) -> tuple[list[str], int | None]:
    """Problems of an ``image_paths`` value (shape only: where the files are is checked on read)."""
    name = "image_paths"
    if value is None:
        return [], 0
    if skip_jinja and not isinstance(value, (list, tuple)) and unresolved(value):
        return [], None
    if not isinstance(value, (list, tuple)):
        hint = " (a single path must be wrapped in a list)" if isinstance(value, str) else ""
        return [
            _problem(
                name, value, f"must be a list of 0-{MAX_IMAGES} local paths or storage URIs (file://, s3://...){hint}"
            )
        ], None
    problems = []
    if len(value) > MAX_IMAGES:
        problems.append(
            _problem(name, value, f"at most {MAX_IMAGES} images (first frame, last frame), got {len(value)}")
        )
    for i, item in enumerate(value):
        if skip_jinja and unresolved(item):
            continue
        if isinstance(item, str):
            if not item.strip():
                problems.append(_problem(f"{name}[{i}]", item, "must be a non-empty path or URI"))
            elif item.strip().lower().startswith(("http://", "https://", "data:")):
                problems.append(
                    _problem(f"{name}[{i}]", item, "must be a file path or storage URI; pass web URLs as image_urls")
                )
        elif not (hasattr(item, "__fspath__") or (hasattr(item, "protocol") and hasattr(item, "fs"))):
            problems.append(_problem(f"{name}[{i}]", item, "must be a path string, pathlib.Path or ObjectStoragePath"))
    return problems, len(value)


def _check_v3_images(extra: Mapping[str, Any], skip_jinja: bool) -> tuple[list[str], int]:
    problems: list[str] = []
    count = 0
    refs = extra.get("reference_images")
    if refs is not None:
        if not isinstance(refs, (list, tuple)):
            problems.append(_problem("extra_body.reference_images", refs, "must be a list of http(s) URLs"))
        else:
            count += len(refs)
            for i, url in enumerate(refs):
                if not (skip_jinja and has_jinja(url)):
                    problems += check_url(f"extra_body.reference_images[{i}]", url)
    roles = extra.get("image_with_roles")
    if roles is not None:
        if not isinstance(roles, (list, tuple)):
            return [
                *problems,
                _problem("extra_body.image_with_roles", roles, "must be a list of {'url', 'role'} objects"),
            ], count
        count += len(roles)
        seen: dict[str, int] = {}
        for i, item in enumerate(roles):
            where = f"extra_body.image_with_roles[{i}]"
            if not isinstance(item, Mapping) or "url" not in item or "role" not in item:
                problems.append(_problem(where, item, "must be an object with 'url' and 'role'"))
                continue
            if not (skip_jinja and has_jinja(item["url"])):
                problems += check_url(f"{where}.url", item["url"])
            role = item["role"]
            if not (skip_jinja and has_jinja(role)):
                problems += _check_choice(f"{where}.role", role, IMAGE_ROLES)
            seen[role] = seen.get(role, 0) + 1
        for role in ("first_frame", "last_frame"):
            if seen.get(role, 0) > 1:
                problems.append(
                    _problem("extra_body.image_with_roles", f"{seen[role]} x {role}", f"at most one {role}")
                )
    return problems, count


def _check_extra_body(extra: Any, fields: Mapping[str, Any], skip_jinja: bool) -> tuple[list[str], int]:
    if extra is None:
        return [], 0
    if skip_jinja and (has_jinja(extra) or not is_plain_literal(extra)):
        return [], 0
    if not isinstance(extra, Mapping):
        return [_problem("extra_body", extra, "must be a dict of extra API fields")], 0
    problems = []
    clash = sorted(RESERVED_BODY_KEYS & set(extra))
    if clash:
        problems.append(
            _problem(
                "extra_body",
                {k: extra[k] for k in clash},
                f"must not set {', '.join(clash)}: use the operator's own arguments",
            )
        )
    meta = extra.get("metadata")
    if meta is not None:
        if not isinstance(meta, Mapping):
            problems.append(_problem("extra_body.metadata", meta, "must be a dict"))
        else:
            for key, kwarg in (("negative_prompt", "negative_prompt"), ("watermark", "watermark")):
                if key in meta and fields.get(kwarg) is not None:
                    problems.append(
                        _problem(
                            f"extra_body.metadata.{key}",
                            meta[key],
                            f"duplicates the {kwarg} argument; set only one",
                        )
                    )
    image_problems, count = _check_v3_images(extra, skip_jinja)
    problems += image_problems
    if count and fields.get("image_urls"):
        problems.append(
            _problem(
                "image_urls",
                fields["image_urls"],
                "cannot be combined with extra_body.image_with_roles/reference_images; use one image form",
            )
        )
    return problems, count


def collect_problems(fields: Mapping[str, Any], *, skip_jinja: bool = False) -> list[str]:
    """Every problem of a set of request keyword arguments, one line each.

    :param fields: the operator's request keyword arguments (missing keys take their defaults).
    :param skip_jinja: skip values (and list items) that are not known yet: Jinja strings and
        anything that is not a plain literal (see :func:`is_plain_literal`). Used at DAG parse;
        such values are checked again after rendering/resolution, before any request.
    """

    def known(name: str) -> bool:
        return not (skip_jinja and unresolved(fields.get(name)))

    problems: list[str] = []
    if known("model"):
        problems += _check_choice(
            "model",
            fields.get("model", "kling-v3"),
            SUPPORTED_MODELS,
            " (the models whose rules this provider knows)",
        )
    if known("prompt"):
        problems += _check_prompt(fields.get("prompt"))
    if known("mode"):
        problems += _check_choice("mode", fields.get("mode", "std"), list(MODES), " (std = 720P, pro = 1080P)")
    if known("aspect_ratio"):
        problems += _check_choice("aspect_ratio", fields.get("aspect_ratio", "16:9"), ASPECT_RATIOS)
    if known("audio") and coerce_bool(fields.get("audio", False)) is None:
        problems.append(_problem("audio", fields.get("audio"), "must be True or False"))
    if known("negative_prompt"):
        problems += _check_prompt(fields.get("negative_prompt"), "negative_prompt", required=False)
    watermark = fields.get("watermark")
    if known("watermark") and watermark is not None and coerce_bool(watermark) is None:
        problems.append(_problem("watermark", watermark, "must be True, False or None"))

    image_problems, n_images = _image_list("image_urls", fields.get("image_urls"), skip_jinja)
    problems += image_problems
    path_problems, n_paths = _path_list(fields.get("image_paths"), skip_jinja)
    problems += path_problems
    if fields.get("image_urls") not in (None, [], ()) and fields.get("image_paths") not in (None, [], ()):
        problems.append(
            _problem(
                "image_urls/image_paths",
                f"{fields['image_urls']!r} / {fields['image_paths']!r}",
                "give either image_urls (public URLs) or image_paths (files to upload), not both",
            )
        )
    n_images = (n_images or 0) + (n_paths or 0)
    extra_problems, n_v3 = _check_extra_body(fields.get("extra_body"), fields, skip_jinja)
    problems += extra_problems

    raw = fields.get("duration", 5)
    if known("duration"):
        duration = coerce_duration(raw)
        if duration not in DURATIONS:
            problems.append(_problem("duration", raw, "must be 5, 10 or 15 (seconds, an int)"))
        elif duration > MAX_DURATION_WITH_IMAGES and (n_images or n_v3):
            images = (n_images or 0) + n_v3
            problems.append(
                _problem(
                    "duration",
                    raw,
                    f"must be 5 or 10 with input images ({images} given); 15 s is text-to-video only",
                )
            )
    return problems


# --------------------------------------------------------------------------- request


@dataclass(frozen=True)
class KlingVideoRequest:
    """A validated kling-v3 create request.

    Build it with :meth:`from_kwargs`, which checks every rule and reports all problems at once.

    :param prompt: what to generate (1-2500 characters).
    :param mode: ``std`` (720P) or ``pro`` (1080P).
    :param duration: 5, 10 or 15 seconds; 15 only without images.
    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
    :param image_urls: 0-2 public URLs: one = first frame, two = first + last frame.
    :param audio: generate sound (billed as "Sound").
    :param negative_prompt: sent as ``metadata.negative_prompt``.
    :param watermark: sent as ``metadata.watermark``.
    :param extra_body: extra API fields merged into the body (never overriding the above).
    :param model: ``kling-v3``.
    """

    prompt: str
    mode: str = "std"
    duration: int = 5
    aspect_ratio: str = "16:9"
    image_urls: tuple[str, ...] = ()
    audio: bool = False
    negative_prompt: str | None = None
    watermark: bool | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    model: str = "kling-v3"

    @classmethod
    def from_kwargs(cls, **fields: Any) -> KlingVideoRequest:
        """Validate keyword arguments and build the request.

        :raises KlingValidationError: naming every field that breaks a rule.
        """
        unknown = sorted(set(fields) - {f for f in cls.__dataclass_fields__})
        problems = [f"{name}: unknown argument" for name in unknown]
        problems += collect_problems(fields)
        if problems:
            raise KlingValidationError(problems)
        watermark = fields.get("watermark")
        return cls(
            prompt=fields["prompt"],
            mode=fields.get("mode", "std"),
            duration=coerce_duration(fields.get("duration", 5)) or 5,
            aspect_ratio=fields.get("aspect_ratio", "16:9"),
            image_urls=tuple(fields.get("image_urls") or ()),
            audio=bool(coerce_bool(fields.get("audio", False))),
            negative_prompt=fields.get("negative_prompt"),
            watermark=None if watermark is None else coerce_bool(watermark),
            extra_body=dict(fields.get("extra_body") or {}),
            model=fields.get("model", "kling-v3"),
        )

    @property
    def billed_as(self) -> str:
        """The billing line of this request, e.g. ``720P+Sound``."""
        return MODES[self.mode] + ("+Sound" if self.audio else "")

    def digest(self, image_digests: Sequence[str] | None = None) -> str:
        """A stable digest (sha256 hex) of every field this request sends.

        Canonical JSON of :meth:`to_body` without ``client_business_id``. Image URLs are part of it,
        unless ``image_digests`` (e.g. the sha256 of each uploaded file's contents) stand in for
        them, so that images uploaded to fresh URLs on every try keep one digest.

        :param image_digests: stable digests of the input images, in first/last-frame order.
        """
        body = self.to_body("")
        body.pop("client_business_id", None)
        if image_digests is not None:
            body.pop("image_urls", None)
            body["image_digests"] = list(image_digests)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_body(self, client_business_id: str) -> dict[str, Any]:
        """The JSON body of ``POST /v1/videos/generations`` (V2 wire form)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "mode": self.mode,
            "duration": self.duration,
            "aspect_ratio": self.aspect_ratio,
            "audio": self.audio,
            "client_business_id": client_business_id,
        }
        body.update(image_fields(self.image_urls))
        metadata: dict[str, Any] = {}
        if self.negative_prompt is not None:
            metadata["negative_prompt"] = self.negative_prompt
        if self.watermark is not None:
            metadata["watermark"] = self.watermark
        extra = dict(self.extra_body)
        metadata.update(extra.pop("metadata", None) or {})
        body.update(extra)
        if metadata:
            body["metadata"] = metadata
        return body


def image_fields(image_urls: Sequence[str], *, wire: str = "v2") -> dict[str, Any]:
    """The body fields for first/last-frame images, in one place so the wire form can change.

    ``v2`` sends ``image_urls``; ``v3`` sends ``image_with_roles`` with explicit frame roles
    (never ``reference_images``, which are not frames).
    """
    if not image_urls:
        return {}
    if wire == "v3":
        roles = ("first_frame", "last_frame")
        return {"image_with_roles": [{"url": u, "role": r} for u, r in zip(image_urls, roles, strict=False)]}
    return {"image_urls": list(image_urls)}


# --------------------------------------------------------------------------- task


class TaskStatus(str, Enum):
    """Normalised status of a generation task."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


_STATUS_ALIASES = {
    **dict.fromkeys(("queued", "submitted", "pending"), TaskStatus.QUEUED),
    **dict.fromkeys(("in_progress", "processing"), TaskStatus.IN_PROGRESS),
    **dict.fromkeys(("completed", "succeeded", "succeed", "success"), TaskStatus.COMPLETED),
    **dict.fromkeys(("failed", "failure", "error", "cancelled", "canceled"), TaskStatus.FAILED),
}


def normalise_status(raw: Any) -> TaskStatus | None:
    """Map any documented status spelling (case-insensitive) to :class:`TaskStatus`; ``None`` if unknown."""
    if not isinstance(raw, str):
        return None
    return _STATUS_ALIASES.get(raw.strip().lower())


def parse_progress(raw: Any) -> int:
    """Progress from an int, a float, a string like ``"65%"`` or ``None``, clamped to 0-100."""
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, str):
        raw = raw.strip().rstrip("%").strip()
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return 0
    if math.isnan(value):
        return 0
    return int(min(100.0, max(0.0, value)))


def parse_timestamp(raw: Any) -> datetime | None:
    """A Unix-seconds timestamp (int, float or digit string) as an aware UTC datetime."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    try:
        value = float(raw)
        if not math.isfinite(value) or not 0 <= value < 1e11:
            return None
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# Conservative content-policy recognition for tasks that fail with a generic code but a policy
# message (the API's own example). Languages: en, zh-Hans, zh-Hant, ru (ja/ko pages use English).
_POLICY_MESSAGE = re.compile(
    r"content[\s_-]*(?:safety[\s_-]*)?polic(?:y|ies)|content[\s_-]*moderation|"
    r"内容政策|内容安全政策|违反.{0,8}政策|內容政策|內容安全政策|違反.{0,8}政策|"
    r"политик\w*\s+(?:в\s+отношении\s+)?(?:контент|содержим)\w*|(?:контент|содержим)\w*\s+нарушает",
    re.IGNORECASE,
)
CONTENT_POLICY_CODES = frozenset({"content_policy_violation"})
GENERIC_FAILURE_CODES = frozenset({"generation_failed", "failed", "error", ""})


def is_content_policy(code: str | None, message: str | None) -> bool:
    """Whether a failed task was rejected by the content policy.

    Decided by ``error.code`` first; only a generic failure code (``generation_failed`` or none)
    falls back to recognising the policy message in the documented languages.
    """
    normalised = (code or "").strip().lower()
    if normalised in CONTENT_POLICY_CODES:
        return True
    if normalised not in GENERIC_FAILURE_CODES:
        return False
    return bool(_POLICY_MESSAGE.search(unicodedata.normalize("NFKC", message or "")))


#: ``error.code`` spellings that say the input itself is invalid, compared without case, spaces,
#: dashes, dots or underscores: a new generation with the same input fails the same way.
INPUT_INVALID_CODES = frozenset({"invalidparameter", "invalidparameters", "invalidrequest", "invalidimage"})
_INPUT_INVALID_PATTERN = re.compile(r"^(?:image\w*invalid\w*|invalid\w*(?:param|image|prompt|input)\w*)$")


def is_input_invalid(code: str | None) -> bool:
    """Whether a failed task's ``error.code`` says the input is invalid (``InvalidParameter``,
    ``invalid_parameter``, ``invalid_request``, ``invalid_image``, ``image_format_invalid``...)."""
    normalised = re.sub(r"[\s_\-.]", "", (code or "").lower())
    return normalised in INPUT_INVALID_CODES or bool(_INPUT_INVALID_PATTERN.match(normalised))


def is_final_failure(code: str | None, message: str | None) -> bool:
    """Whether a failed generation must not be generated again: content policy or invalid input."""
    return is_content_policy(code, message) or is_input_invalid(code)


@dataclass
class KlingTask:
    """A generation task as returned by the API, normalised.

    :param id: the task id.
    :param status: the normalised status.
    :param raw_status: the status string the API sent.
    :param progress: 0-100.
    :param video_url: ``result.data[0].url`` (or a legacy top-level ``url``).
    :param expires_at: when the video URL stops working (falls back to completion + 24 h).
    """

    id: str
    status: TaskStatus
    raw_status: str | None = None
    progress: int = 0
    model: str | None = None
    client_business_id: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    video_url: str | None = None
    video_format: str = "mp4"
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> KlingTask:
        """Parse a create or status response body.

        :raises KlingAPIError: the body is not a task (no id, not an object).
        """
        if not isinstance(data, Mapping):
            raise KlingAPIError(
                f"malformed task response: expected a JSON object, got {type(data).__name__}",
                code="malformed_response",
            )
        task_id = data.get("id") or data.get("task_id")
        if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or not str(task_id):
            raise KlingAPIError("malformed task response: no task id", code="malformed_response")
        raw_status = data.get("status")
        error = data.get("error")
        # An unknown status word is "running", unless the body carries an error object.
        status = normalise_status(raw_status) or (
            TaskStatus.FAILED if isinstance(error, Mapping) and error else TaskStatus.IN_PROGRESS
        )
        url, fmt = _video(data)
        completed_at = parse_timestamp(data.get("completed_at"))
        expires_at = parse_timestamp(data.get("expires_at"))
        if expires_at is None and completed_at is not None:
            expires_at = completed_at + URL_TTL_FALLBACK
        code = message = None
        if isinstance(error, Mapping):
            code = None if error.get("code") is None else str(error.get("code"))
            message = None if error.get("message") is None else str(error.get("message"))
        elif isinstance(error, str) and error:
            message = error
        business_id = data.get("client_business_id")
        if business_id is None and isinstance(data.get("metadata"), Mapping):
            business_id = data["metadata"].get("client_business_id")
        return cls(
            id=str(task_id),
            status=status,
            raw_status=raw_status if isinstance(raw_status, str) else None,
            progress=100 if status is TaskStatus.COMPLETED else parse_progress(data.get("progress")),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            client_business_id=business_id if isinstance(business_id, str) else None,
            created_at=parse_timestamp(data.get("created_at")),
            completed_at=completed_at,
            expires_at=expires_at,
            video_url=url,
            video_format=fmt,
            error_code=code,
            error_message=message,
        )

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_unknown_status(self) -> bool:
        """The API sent a status this provider does not know (treated as running)."""
        return normalise_status(self.raw_status) is None

    @property
    def is_content_policy(self) -> bool:
        return self.status is TaskStatus.FAILED and is_content_policy(self.error_code, self.error_message)

    @property
    def is_input_invalid(self) -> bool:
        """The generation failed because its input is invalid: generating again fails the same way."""
        return self.status is TaskStatus.FAILED and is_input_invalid(self.error_code)

    @property
    def is_final_failure(self) -> bool:
        """Failed for a reason a new generation cannot fix (content policy or invalid input)."""
        return self.is_content_policy or self.is_input_invalid

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the video URL is past ``expires_at``."""
        if self.expires_at is None:
            return False
        return (now or datetime.now(timezone.utc)) >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (datetimes as ISO-8601 UTC), e.g. for a trigger event."""
        # Every field is a scalar, a datetime or the status: a flat copy (``asdict`` deep-copies each
        # value, ~0.1 ms a task, once per trigger event).
        out = {f.name: getattr(self, f.name) for f in _TASK_FIELDS}
        out["status"] = self.status.value
        for key in ("created_at", "completed_at", "expires_at"):
            out[key] = _iso(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> KlingTask:
        """Inverse of :meth:`to_dict` (e.g. the task inside a trigger event), checked field by field.

        :raises KlingAPIError: ``data`` is not a task dict.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
            raise KlingAPIError(f"malformed task: {data!r:.100}", code="invalid_event")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        return cls(
            id=data["id"],
            status=normalise_status(data.get("status")) or TaskStatus.IN_PROGRESS,
            raw_status=text("raw_status"),
            progress=parse_progress(data.get("progress")),
            model=text("model"),
            client_business_id=text("client_business_id"),
            created_at=parse_timestamp(data.get("created_at")),
            completed_at=parse_timestamp(data.get("completed_at")),
            expires_at=parse_timestamp(data.get("expires_at")),
            video_url=text("video_url"),
            video_format=text("video_format") or "mp4",
            error_code=text("error_code"),
            error_message=text("error_message"),
        )

    def to_result(self, client_business_id: str | None = None) -> dict[str, Any]:
        """The result dict that the sensor and the generate operator return (XCom)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "video_url": self.video_url,
            "format": self.video_format,
            "expires_at": _iso(self.expires_at),
            "model": self.model,
            "client_business_id": self.client_business_id or client_business_id,
            "created_at": _iso(self.created_at),
            "completed_at": _iso(self.completed_at),
            "progress": self.progress,
        }


_TASK_FIELDS = fields(KlingTask)


def _video(data: Mapping[str, Any]) -> tuple[str | None, str]:
    result = data.get("result")
    if isinstance(result, Mapping):
        items = result.get("data")
        if isinstance(items, list) and items and isinstance(items[0], Mapping):
            url = items[0].get("url")
            fmt = items[0].get("format")
            if isinstance(url, str) and url:
                return url, fmt if isinstance(fmt, str) and fmt else "mp4"
    url = data.get("url")
    return (url if isinstance(url, str) and url else None), "mp4"
