"""KlingHook: authentication, HTTP, retries and response parsing for the ToAPIs kling-v3 API."""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying, Retrying

from airflow_provider_kling.api import (
    CONNECT_TIMEOUT,
    TEST_CONNECTION_SECONDS,
    UPLOAD_READ_TIMEOUT,
    Call,
    ClientSettings,
    RetryPolicy,
    aiohttp_ssl,
    attempt_seconds,
    is_throttle,
    is_transient,
    parse_retry_after,
    read_response,
    slot_wait,
    transport_error,
)
from airflow_provider_kling.compat import mask_secret
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingError,
    KlingRateLimitError,
    KlingValidationError,
    KlingVideoExpiredError,
)
from airflow_provider_kling.media.images import (  # noqa: F401 (re-exported)
    MAX_UPLOAD_BYTES,
    ImageFile,
    read_image,
    sniff_image_type,
)
from airflow_provider_kling.media.mp4 import CorruptVideoError
from airflow_provider_kling.media.storage import output_file, staged_file
from airflow_provider_kling.media.video import StoredVideo, UnsupportedEncodingError, finish_download
from airflow_provider_kling.models import KlingTask, KlingVideoRequest

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_kling.sessions import Permits

#: Seconds a download may take in all (attempts and waits) when the caller gives no deadline.
DOWNLOAD_DEADLINE = 900.0
#: The file host refuses an expired or revoked signed URL with one of these.
EXPIRED_STATUSES = (403, 404, 410)


class KlingHook(BaseHook):
    """Talks to the Kling v3 video API served by ToAPIs.

    The connection's ``password`` is the API key (sent as ``Authorization: Bearer``), ``host`` the
    base URL (default ``https://toapis.com``). Extras: ``timeout`` (read timeout, seconds, default 30),
    ``rate_limit_group`` (``default``, ``vip`` or ``svip``: the account's documented quotas),
    ``max_submits_per_minute`` and ``max_requests_per_minute`` (client-side submit and query budgets
    shared by every caller on this key in the process; default the group's quotas, 300 and 3000 for
    ``default``; a 429 halves the pace, which grows back after a quiet spell), ``business_id_prefix`` (namespace for ``client_business_id`` when several
    deployments share one account), ``proxy`` (a proxy URL) and ``verify`` (``true``/``false`` or a
    CA bundle path). Without ``proxy``/``verify`` the standard environment applies on every path
    (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``).
    Surrounding whitespace of the key is stripped; a control or non-Latin-1 character inside it
    raises :class:`KlingAuthError` before any request.

    Every call ends. Each attempt is bounded by wall-clock time (connect + read timeout; a server
    trickling bytes cannot stretch it) and by the call's deadline, and so are the waits for a
    connection and for a request-budget slot (a slot after the deadline fails at once). A call
    whose policy has no deadline gets one: 300 s (:data:`~airflow_provider_kling.api.DEFAULT_CALL_SECONDS`: a per-minute
    quota window plus the transient retries, then Airflow's own retries take over) for balance,
    status, upload and download; 30 s for :meth:`test_connection`, which the UI waits for.

    Sync methods use ``requests``. Triggers use the hook as an async context manager, which resolves
    the connection without blocking (one lookup per event loop and connection, shared for
    :data:`~airflow_provider_kling.startup.SETTINGS_TTL_SECONDS`) and borrows the event loop's shared
    aiohttp session::

        async with KlingHook("kling_default") as hook:
            task = await hook.aget_task(task_id)

    :param kling_conn_id: the Airflow connection id.
    """

    conn_name_attr = "kling_conn_id"
    default_conn_name = "kling_default"
    conn_type = "kling"
    hook_name = "Kling (ToAPIs)"

    def __init__(self, kling_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kling_conn_id = kling_conn_id
        self._async_settings: ClientSettings | None = None
        self._session_cm: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._permits: Permits | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kling_conn_id={self.kling_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's standard fields: base URL and API key, relabelled, with placeholders.

        Read by Airflow 3.0 and 3.1 only; later versions take the same form from the provider
        metadata (``ui-field-behaviour`` in :func:`~airflow_provider_kling.get_provider_info.get_provider_info`).
        """
        from airflow_provider_kling.get_provider_info import UI_FIELD_BEHAVIOUR

        return {key.replace("-", "_"): copy.deepcopy(value) for key, value in UI_FIELD_BEHAVIOUR.items()}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields for Airflow 3.0 and 3.1.

        Those versions ignore the declarative ``conn-fields`` and build the form from these widgets
        (the UI substitutes its own stand-ins for the WTForms classes, so FAB need not be installed
        on 3.1). Airflow 3.2 and later read ``conn-fields`` and never call this. Every field is text:
        the hook parses numbers and ``true``/``false`` itself, so one form serves every version.
        """
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField
        from wtforms.validators import Optional

        from airflow_provider_kling.get_provider_info import CONN_FIELDS

        return {
            name: StringField(
                lazy_gettext(spec["label"]),
                validators=[Optional()],
                description=spec.get("description", ""),
                default=None if spec["schema"].get("default") is None else str(spec["schema"]["default"]),
                widget=BS3TextFieldWidget(),
            )
            for name, spec in CONN_FIELDS.items()
        }

    # ----------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> ClientSettings:
        """Connection settings (sync lookup: never call this on an event loop)."""
        conn = self.get_connection(self.kling_conn_id)
        return self._settings_from(conn, conn.extra_dejson)

    def _settings_from(self, conn: Any, extras: Mapping[str, Any]) -> ClientSettings:
        settings = ClientSettings.from_connection(conn, extras or {}, self.kling_conn_id)
        mask_secret(settings.api_key)
        return settings

    # ----------------------------------------------------------------- sync transport

    @cached_property
    def _http(self) -> requests.Session:
        from airflow_provider_kling.sync_http import KlingSession

        settings = self.settings
        return KlingSession(proxy=settings.proxy, verify=settings.verify)

    def close(self) -> None:
        """Close the sync HTTP session (keep-alive connections)."""
        if "_http" in self.__dict__:
            self.__dict__.pop("_http").close()

    def _send(self, settings: ClientSettings, call: Call, deadline: float) -> tuple[int, Mapping[str, str], bytes]:
        from airflow_provider_kling.sync_http import attempt_deadline

        files: Any = None
        read_timeout = settings.read_timeout
        if call.upload:
            name, data, mime = call.upload
            files = {"file": (name, data, mime), "purpose": (None, "generation")}
            read_timeout = max(read_timeout, UPLOAD_READ_TIMEOUT)
        limit = attempt_seconds(settings, call, deadline)
        ends = time.monotonic() + limit
        try:
            with attempt_deadline(limit):
                response = self._http.request(
                    call.method,
                    settings.url(call.path),
                    json=call.json,
                    files=files,
                    headers=settings.auth_headers,
                    timeout=(min(CONNECT_TIMEOUT, limit), min(read_timeout, limit)),
                    allow_redirects=False,
                )
                return response.status_code, response.headers, response.content
        except requests.RequestException as err:
            raise transport_error(call.what, err, timed_out=time.monotonic() >= ends) from None

    def request(self, call: Call, policy: RetryPolicy | None = None) -> Any:
        """Send ``call`` with retries; return the decoded JSON (``None`` for a ``missing_ok`` 404).

        :param policy: retries and deadline; without one, :class:`RetryPolicy` defaults (300 s).
        """
        settings = self.settings
        policy = (policy or RetryPolicy()).bounded()
        deadline = float(policy.deadline)  # type: ignore[arg-type]
        for attempt in Retrying(**policy.tenacity_kwargs()):
            with attempt:
                budget = settings.budgets.bucket(call.bucket)
                slot = slot_wait(budget, deadline, call.what)
                while slot.delay:
                    time.sleep(slot.delay)
                    slot = slot_wait(budget, deadline, call.what, after=slot)
                status, headers, body = self._send(settings, call, deadline)
                return read_response(call, status, headers, body, settings.budgets, slot)
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- sync API

    def submit_video(
        self, request: KlingVideoRequest, client_business_id: str, policy: RetryPolicy | None = None
    ) -> KlingTask:
        """Create a generation. Retries resend the same body with the same id (the API replays it).

        :param request: the validated request.
        :param client_business_id: the idempotency id of this generation.
        :param policy: retry policy (deadline for waiting out 429/503).
        """
        call = Call.create(request.to_body(client_business_id))
        task = KlingTask.from_api(self.request(call, policy))
        self.log.info("Kling task %s (%s) is %s", task.id, client_business_id, task.status.value)
        return task

    def get_task(
        self, task_or_business_id: str, policy: RetryPolicy | None = None, missing_ok: bool = False
    ) -> KlingTask | None:
        """The task with this task id or ``client_business_id``.

        :param missing_ok: return ``None`` on 404 instead of raising.
        """
        data = self.request(Call.status(task_or_business_id, missing_ok), policy)
        return None if data is None else KlingTask.from_api(data)

    def get_balance(self, policy: RetryPolicy | None = None) -> dict[str, Any]:
        """``GET /v1/balance``: the balance of this key (credits are the unit to report).

        :param policy: retries and deadline (default: :class:`RetryPolicy`, 300 s).
        """
        data = self.request(Call("GET", "/v1/balance", "balance"), policy)
        if not isinstance(data, Mapping) or data.get("success") is False:
            message = data.get("message") if isinstance(data, Mapping) else "malformed body"
            raise KlingAPIError(f"balance failed: {message}", status=200, code="balance_failed")
        return dict(data)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the balance endpoint; report the credits left (answers within 30 s)."""
        try:
            balance = self.get_balance(RetryPolicy(default_seconds=TEST_CONNECTION_SECONDS))
        except KlingAuthError:
            return False, "invalid API key (authentication failed)"
        except KlingError as err:
            return False, str(err)
        if balance.get("unlimited_quota"):
            return True, "Connection OK: unlimited quota"
        try:
            credits = float(balance["remain_credits"])
            per_usd = float(balance.get("credits_per_usd") or 200)
        except (KeyError, TypeError, ValueError):
            return True, "Connection OK"
        return True, f"Connection OK: {credits:.0f} credits remaining (≈ ${credits / per_usd:.2f})"

    def upload_image(self, path: Any) -> str:
        """Upload a JPEG/PNG/WebP/GIF (at most 10 MB) and return its public URL.

        Upload right before submitting: how long uploaded URLs live is not documented.

        :param path: a local path, ``pathlib.Path``, ``ObjectStoragePath`` or URI (``memory://…``,
            ``file://…``, ``s3://conn_id@bucket/key``); checked before any request. An
            ``ImageFile`` already read (and checked) is sent as is.
        """
        image = path if isinstance(path, ImageFile) else read_image(path, field="image_path")
        call = Call("POST", "/v1/uploads/images", "upload", upload=(image.name, image.data, image.mime))
        body = self.request(call)
        url = body.get("data", {}).get("url") if isinstance(body, Mapping) else None
        if not isinstance(body, Mapping) or body.get("success") is False or not isinstance(url, str):
            message = body.get("message") if isinstance(body, Mapping) else "malformed body"
            raise KlingAPIError(f"upload failed: {message}", status=200, code="upload_failed")
        return url

    def download_video(
        self,
        source: str | KlingTask | Mapping[str, Any],
        path: Any,
        *,
        chunk_size: int = 1 << 16,
        policy: RetryPolicy | None = None,
    ) -> StoredVideo:
        """Stream a finished video to ``path``, verify it, and publish it there.

        The bytes are counted against ``Content-Length`` and the file must be a complete MP4 before it
        is published (renamed into place locally, one upload on object stores); a short or corrupt
        download is retried a bounded number of times and never left at ``path``.

        :param source: the video URL, a :class:`KlingTask`, or a result dict (its ``expires_at`` is
            checked first: an expired URL is dead, and getting the video again means generating again).
        :param path: a local path, ``pathlib.Path``, ``ObjectStoragePath`` or URI (``file://…``,
            ``memory://…``, ``s3://conn_id@bucket/key.mp4``). A string with a scheme is never local.
        :param chunk_size: bytes per read.
        :param policy: retries of the download (bounded attempts for short or corrupt files; the file
            host's 429/503 waited out by its ``Retry-After``); without a deadline, the download ends
            :data:`DOWNLOAD_DEADLINE` seconds from now.
        :return: where it is stored, its size and SHA-256 (``str()`` gives the path, as before).
        :raises KlingValidationError: no http(s) URL, or ``path`` has no usable filesystem.
        :raises KlingVideoExpiredError: past ``expires_at``, or the file host answered 403/404/410.
        :raises KlingAPIError: the download kept failing or kept arriving incomplete.
        """
        url, expires_at = _video_source(source)
        location = output_file(path, "output_path")
        if expires_at is not None and datetime.now(timezone.utc) >= expires_at:
            raise KlingVideoExpiredError(
                f"the video URL expired at {expires_at.isoformat()}; generate the video again",
                code="url_expired",
            )
        read_timeout = self.settings.read_timeout
        policy = (policy or RetryPolicy(default_seconds=DOWNLOAD_DEADLINE)).bounded()
        stored: StoredVideo | None = None
        for attempt in Retrying(**policy.tenacity_kwargs()):
            with attempt:
                received = staged_file(location)
                try:
                    encoding = self._stream_to(url, received, read_timeout, chunk_size, policy.deadline)
                    stored = finish_download(received, encoding, location)
                except CorruptVideoError as err:
                    raise KlingAPIError(f"download: {err}", code="malformed_response") from None
                except UnsupportedEncodingError as err:
                    raise KlingAPIError(f"download: {err}", code="unsupported_encoding") from None
                finally:
                    received.unlink(missing_ok=True)
        if stored is None:  # pragma: no cover - Retrying either returns through the body or raises
            raise AssertionError("unreachable")
        self.log.info("Saved the video to %s (%d bytes, sha256 %s)", stored, stored.size_bytes, stored.sha256)
        return stored

    def _stream_to(
        self, url: str, target: Path, read_timeout: float, chunk_size: int, deadline: float | None
    ) -> str | None:
        """One attempt: write the bytes exactly as they arrive to ``target``; return the Content-Encoding.

        The file host is not the API: no key is sent, and its 429/503 pause only this download (the
        key's request budgets are untouched).
        """
        from airflow_provider_kling.sync_http import attempt_deadline

        headers = {"Accept-Encoding": "identity", "Accept": "*/*", "Authorization": None}
        left = DOWNLOAD_DEADLINE if deadline is None else max(0.001, deadline - time.time())
        try:
            with (
                attempt_deadline(left),
                self._http.get(
                    url, stream=True, headers=headers, timeout=(min(CONNECT_TIMEOUT, left), min(read_timeout, left))
                ) as response,
            ):
                if response.status_code != 200:
                    raise _file_host_error(response.status_code, response.headers, response.raw.read(2048))
                expected = _content_length(response.headers.get("Content-Length"))
                written = 0
                with target.open("wb") as out:
                    for chunk in response.raw.stream(chunk_size, decode_content=False):
                        out.write(chunk)
                        written += len(chunk)
                        if deadline is not None and time.time() > deadline:
                            raise KlingAPIError(f"download timed out after {written} bytes", code="timeout")
                if expected is not None and written != expected:
                    raise KlingAPIError(f"download truncated: {written} of {expected} bytes", code="connection_error")
                return response.headers.get("Content-Encoding")
        except (requests.RequestException, TimeoutError) as err:
            raise transport_error("download", err) from None
        except urllib3.exceptions.HTTPError as err:
            raise transport_error("download", err, timed_out=time.time() >= (deadline or float("inf"))) from None

    # ----------------------------------------------------------------- async

    async def __aenter__(self) -> KlingHook:
        from airflow_provider_kling.sessions import borrow_session
        from airflow_provider_kling.startup import shared_settings

        # One connection lookup per loop and connection serves every trigger starting within seconds.
        self._async_settings = await shared_settings((type(self), self.kling_conn_id), self._alookup_settings)
        self._async_settings.check_async_transport()
        self._session_cm = borrow_session()
        shared = await self._session_cm.__aenter__()
        self._session, self._permits = shared.session, shared.permits
        return self

    async def _alookup_settings(self) -> ClientSettings:
        """Resolve the connection without blocking the loop (async secrets lookup, then the extras)."""
        from airflow_provider_kling.compat import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(self.kling_conn_id, hook=self)
        return self._settings_from(conn, await get_async_extra_dejson(conn))

    async def __aexit__(self, *exc: object) -> None:
        cm, self._session_cm, self._session, self._permits = self._session_cm, None, None, None
        if cm is not None:
            await cm.__aexit__(*exc)

    async def _asend(
        self, settings: ClientSettings, call: Call, deadline: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        import aiohttp

        if self._session is None:
            raise RuntimeError("use 'async with KlingHook(...) as hook' before calling async methods")
        # The session is shared by every connection on the loop: proxy and TLS go per request. One
        # wall-clock bound per attempt (connect + read, cut to the deadline), like the sync path: no
        # per-read timer, which aiohttp re-arms on every chunk received and whose cancelled handles
        # outlive the request in the loop's timer heap (garbage promoted on every poll).
        limit = attempt_seconds(settings, call, deadline)
        timeout = aiohttp.ClientTimeout(total=limit, sock_connect=min(CONNECT_TIMEOUT, limit))
        try:
            async with self._session.request(
                call.method,
                settings.url(call.path),
                json=call.json,
                headers=settings.auth_headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=settings.api_proxy,
                ssl=aiohttp_ssl(settings.ca_verify),
            ) as response:
                return response.status, response.headers, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise transport_error(call.what, err) from None

    async def arequest(self, call: Call, policy: RetryPolicy | None = None) -> Any:
        """Async :meth:`request`: same retries and parsing, on the loop's shared session.

        The first attempt runs outside tenacity: almost every poll succeeds at once, and building the
        retry machinery per call left cyclic garbage that made the triggerer's collector run ~5x as
        often. A failure that may be retried becomes tenacity's first attempt, so counts, waits and
        the deadline are exactly those of the policy.
        """
        settings = self._async_settings
        if settings is None:
            raise RuntimeError("use 'async with KlingHook(...) as hook' before calling async methods")
        policy = (policy or RetryPolicy()).bounded()
        deadline = float(policy.deadline)  # type: ignore[arg-type]
        try:
            return await self._aattempt(settings, call, deadline)
        except KlingError as err:
            if not (is_throttle(err) or is_transient(err)):
                raise
            first_failure: KlingError | None = err
        async for attempt in AsyncRetrying(**policy.tenacity_kwargs()):
            with attempt:
                if first_failure is not None:
                    failed, first_failure = first_failure, None
                    raise failed
                return await self._aattempt(settings, call, deadline)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aattempt(self, settings: ClientSettings, call: Call, deadline: float) -> Any:
        # A free connection first, then the budget slot, then send at once: a request that passed the
        # budget never waits in the pool, so a slow server never receives a backlog as one burst.
        permits = self._permits
        assert permits is not None
        if not await permits.acquire(deadline):
            raise KlingAPIError(f"{call.what} timed out waiting for a free connection", code="timeout")
        round_trip = None
        try:
            budget = settings.budgets.bucket(call.bucket)
            slot = slot_wait(budget, deadline, call.what)
            while slot.delay:
                await asyncio.sleep(slot.delay)
                slot = slot_wait(budget, deadline, call.what, after=slot)
            sent = time.monotonic()
            status, headers, body = await self._asend(settings, call, deadline)
            round_trip = time.monotonic() - sent
        finally:
            permits.release(round_trip)  # an answer's round trip adapts how many go at once
        return read_response(call, status, headers, body, settings.budgets, slot)

    async def aget_task(
        self, task_or_business_id: str, policy: RetryPolicy | None = None, missing_ok: bool = False
    ) -> KlingTask | None:
        """Async :meth:`get_task`."""
        data = await self.arequest(Call.status(task_or_business_id, missing_ok), policy)
        return None if data is None else KlingTask.from_api(data)


def _video_source(source: str | KlingTask | Mapping[str, Any]) -> tuple[str, datetime | None]:
    from airflow_provider_kling.models import parse_timestamp

    if isinstance(source, KlingTask):
        url, expires = source.video_url, source.expires_at
    elif isinstance(source, Mapping):
        url, expires = source.get("video_url"), parse_timestamp(source.get("expires_at"))
    else:
        url, expires = source, None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise KlingValidationError(f"video_url={url!r}: no http(s) video URL to download")
    return url, expires


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _file_host_error(status: int, headers: Mapping[str, str], body: bytes) -> KlingAPIError:
    """The error for a non-200 answer of the file host (never an auth error: no key is sent there)."""
    code_match = re.search(rb"<Code>([^<]{1,64})</Code>", body)
    code = code_match.group(1).decode("ascii", "replace") if code_match else None
    detail = f"{status}" + (f", {code}" if code else "")
    if status in EXPIRED_STATUSES:
        return KlingVideoExpiredError(
            f"video URL expired or not accessible ({detail}); generate again", status=status, code=code or "url_expired"
        )
    hint = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    retry_after = hint if hint else None  # 0 or unreadable: exponential backoff instead
    if status == 429:
        return KlingRateLimitError(
            f"the file host throttled the download ({detail})", status=429, retry_after=retry_after
        )
    return KlingAPIError(f"download failed ({detail})", status=status, code=code, retry_after=retry_after)
