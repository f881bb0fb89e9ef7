"""Errors raised by the Kling provider.

Every error derives from :class:`KlingError`. Errors that a retry cannot fix (bad input, a bad
key, no credits, a content-policy rejection) also derive from ``AirflowFailException`` so that
Airflow fails the task at once instead of spending its retries on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSensorTimeout


class KlingError(AirflowException):
    """Base class of every error raised by the provider."""


class KlingValidationError(KlingError, AirflowFailException, ValueError):
    """A request was rejected before it was sent, or the API answered 400.

    :param problems: one line per problem, each naming the field, the value and what is allowed.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        count = len(self.problems)
        head = "invalid Kling request" if count == 1 else f"invalid Kling request ({count} problems)"
        super().__init__(head + ": " + "; ".join(self.problems))


class KlingAPIError(KlingError):
    """An HTTP error from the API (or a response that breaks the API contract).

    :param message: what went wrong, without request headers or the key.
    :param status: the HTTP status, if there was a response.
    :param code: the API's error code, normalised to ``str``.
    :param retry_after: seconds the server asked us to wait (429/503), if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        super().__init__(message)


class KlingAuthError(KlingAPIError, AirflowFailException):
    """401 or 403: the key is missing, wrong or not allowed."""


class KlingInsufficientCreditsError(KlingAPIError, AirflowFailException):
    """402: the balance is too low to create the task."""


class KlingRateLimitError(KlingAPIError):
    """Rate limited past the caller's deadline: a 429 that outlasted the wait, or (code
    ``request_budget``, no status) the process's own request budget had no slot before it."""


class KlingRequestValidationError(KlingValidationError, KlingAPIError):  # type: ignore[misc]
    """The API itself rejected the request (HTTP 400)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        KlingValidationError.__init__(self, message)
        self.status, self.code, self.message, self.retry_after = status, code, message, None


class KlingTaskFailedError(KlingError):
    """The generation ended with status ``failed`` (retryable: a new generation may succeed).

    :param task_id: the Kling task id.
    :param code: ``error.code`` of the task.
    :param message: ``error.message`` of the task.
    """

    def __init__(self, message: str, *, task_id: str | None = None, code: str | None = None) -> None:
        self.task_id = task_id
        self.code = code
        self.message = message
        super().__init__(message)


class KlingTaskFailedFinalError(KlingTaskFailedError, AirflowFailException):
    """The generation failed and this task cannot make a new one (a sensor only waits)."""


class KlingContentPolicyError(KlingTaskFailedError, AirflowFailException):
    """The prompt or an image was rejected by the content policy; retrying only pays again."""


class KlingTimeoutError(KlingError):
    """The generation did not finish before the deadline. The remote task keeps running."""


class KlingSensorTimeout(KlingTimeoutError, AirflowSensorTimeout):
    """The sensor's timeout: Airflow's sensor timeout (not retried; ``soft_fail`` makes it a skip)."""


def loads_json(body: bytes) -> Any:
    """A response body's JSON, as RFC 8259 reads it: UTF-8 with or without a byte order mark (some
    fronts send one), or UTF-16/32 detected from the first bytes.

    :raises ValueError: not JSON (``UnicodeDecodeError`` is a ``ValueError``).
    """
    return json.loads(body)


def _decode(body: bytes | str | None) -> tuple[Any, str]:
    text = body.decode("utf-8-sig", "replace") if isinstance(body, bytes) else (body or "")
    try:
        return (loads_json(body) if isinstance(body, bytes) else json.loads(text)), text
    except ValueError:
        return None, text


def parse_error_body(body: bytes | str | None) -> tuple[str | None, str | None, str]:
    """Read ``(code, type, message)`` from any of the API's three error envelopes.

    Envelope 1/2: ``{"error": {"code", "type", "message"}}`` (``code`` int or str);
    envelope 3: ``{"success": false, "message"}``. A body that is not JSON keeps its first
    200 characters as the message.
    """
    data, text = _decode(body)
    if isinstance(data, Mapping):
        err = data.get("error")
        if isinstance(err, Mapping):
            code = err.get("code")
            etype = err.get("type")
            return (
                None if code is None else str(code),
                None if etype is None else str(etype),
                str(err.get("message") or ""),
            )
        if data.get("success") is False:
            return None, None, str(data.get("message") or "")
    return None, None, " ".join(text[:200].split())


def error_from_response(
    status: int, body: bytes | str | None, *, retry_after: float | None = None, what: str = "request"
) -> KlingError:
    """Turn an error response into the matching typed exception.

    The decision is made on the HTTP status first, then on the string code. Request headers
    are never part of the result, so the key cannot leak through it.

    :param status: HTTP status of the response.
    :param body: raw response body.
    :param retry_after: parsed ``Retry-After`` seconds, for 429/503.
    :param what: short description of the call, e.g. ``"create"``, for the message.
    """
    code, etype, message = parse_error_body(body)
    detail = f"{what} failed ({status}" + (f", {code}" if code and code != str(status) else "") + ")"
    if message:
        detail += f": {message}"
    if status == 407:
        return proxy_refusal(what, status)
    if status in (401, 403):
        return KlingAuthError(
            f"authentication failed ({status}): {message or 'invalid API key'}", status=status, code=code
        )
    if status == 402:
        return KlingInsufficientCreditsError(
            f"insufficient credits (402): {message or 'balance too low'}", status=status, code=code
        )
    if code == "content_policy_violation":
        return KlingContentPolicyError(f"content policy ({code}): {message}", code=code)
    if status == 429:
        return KlingRateLimitError(detail, status=status, code=code, retry_after=retry_after)
    if status in (400, 422):
        return KlingRequestValidationError(detail, status=status, code=code or etype)
    return KlingAPIError(detail, status=status, code=code or etype, retry_after=retry_after)


def proxy_refusal(what: str, status: int) -> KlingAPIError:
    """A proxy's refusal to carry a call (407, or a 4xx answer to its CONNECT): configuration, so it
    is final (never retried as a connection error); a proxy's 5xx stays transient."""
    if status == 407:
        return KlingAPIError(
            f"{what} refused by the proxy (407 Proxy Authentication Required): give the proxy's user and "
            "password in its URL (http://user:password@host:port, in the proxy extra or HTTPS_PROXY)",
            status=407,
            code="proxy_auth_required",
        )
    kind = "proxy_refused" if status < 500 else "proxy_error"
    return KlingAPIError(f"{what} refused by the proxy ({status})", status=status, code=kind)


class KlingVideoExpiredError(KlingAPIError):
    """The file host refused the video URL (403/404/410) or it is past ``expires_at``.

    The URL cannot be refreshed: getting the video again means generating it again.
    """
