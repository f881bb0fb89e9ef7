"""KlingHook: authentication, HTTP, retries and response parsing for the ToAPIs kling-v3 API."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from airflow.providers.common.compat.sdk import BaseHook
from tenacity import AsyncRetrying, Retrying

from airflow_provider_kling.api import (
    CONNECT_TIMEOUT,
    UPLOAD_READ_TIMEOUT,
    Call,
    ClientSettings,
    RetryPolicy,
    is_throttle,
    is_transient,
    read_response,
    transport_error,
)
from airflow_provider_kling.compat import mask_secret
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingError,
    KlingValidationError,
)
from airflow_provider_kling.models import KlingTask, KlingVideoRequest

if TYPE_CHECKING:
    import aiohttp

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Image types the upload endpoint accepts, by their leading bytes.
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, GIF or WebP from its first bytes; ``None`` otherwise."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for sig, mime in IMAGE_SIGNATURES.items() if head.startswith(sig)), None)


class KlingHook(BaseHook):
    """Talks to the Kling v3 video API served by ToAPIs.

    The connection's ``password`` is the API key (sent as ``Authorization: Bearer``), ``host`` the
    base URL (default ``https://toapis.com``). Extras: ``timeout`` (read timeout, seconds, default 30),
    ``max_requests_per_minute`` (client-side budget shared by every caller on this key in the process,
    default 3000), ``business_id_prefix`` (namespace for ``client_business_id`` when several
    deployments share one account).

    Sync methods use ``requests``. Triggers use the hook as an async context manager, which resolves
    the connection without blocking and borrows the event loop's shared aiohttp session::

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
        self._timeout: aiohttp.ClientTimeout | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kling_conn_id={self.kling_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: only the base URL and the API key, with placeholders."""
        return {
            "hidden_fields": ["schema", "port", "login", "extra"],
            "relabeling": {"host": "Base URL", "password": "API key"},
            "placeholders": {"host": "https://toapis.com (or https://toapis.cn)", "password": "sk-..."},
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
        session = requests.Session()
        session.trust_env = False
        return session

    def close(self) -> None:
        """Close the sync HTTP session (keep-alive connections)."""
        if "_http" in self.__dict__:
            self.__dict__.pop("_http").close()

    def _send(self, settings: ClientSettings, call: Call) -> tuple[int, Mapping[str, str], bytes]:
        files: Any = None
        read_timeout = settings.read_timeout
        if call.upload:
            name, data, mime = call.upload
            files = {"file": (name, data, mime), "purpose": (None, "generation")}
            read_timeout = max(read_timeout, UPLOAD_READ_TIMEOUT)
        try:
            response = self._http.request(
                call.method,
                settings.url(call.path),
                json=call.json,
                files=files,
                headers=settings.auth_headers,
                timeout=(CONNECT_TIMEOUT, read_timeout),
                allow_redirects=False,
            )
            return response.status_code, response.headers, response.content
        except requests.RequestException as err:
            raise transport_error(call.what, err) from None

    def request(self, call: Call, policy: RetryPolicy | None = None) -> Any:
        """Send ``call`` with retries; return the decoded JSON (``None`` for a ``missing_ok`` 404)."""
        settings = self.settings
        for attempt in Retrying(**(policy or RetryPolicy()).tenacity_kwargs()):
            with attempt:
                delay = settings.budget.reserve()
                while delay:
                    time.sleep(delay)
                    delay = settings.budget.recheck()
                status, headers, body = self._send(settings, call)
                return read_response(call, status, headers, body, settings.budget)
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
        call = Call("POST", "/v1/videos/generations", "create", json=request.to_body(client_business_id))
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

    def get_balance(self) -> dict[str, Any]:
        """``GET /v1/balance``: the balance of this key (credits are the unit to report)."""
        data = self.request(Call("GET", "/v1/balance", "balance"))
        if not isinstance(data, Mapping) or data.get("success") is False:
            message = data.get("message") if isinstance(data, Mapping) else "malformed body"
            raise KlingAPIError(f"balance failed: {message}", status=200, code="balance_failed")
        return dict(data)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the balance endpoint; report the credits left."""
        try:
            balance = self.get_balance()
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

    def upload_image(self, path: str | os.PathLike[str]) -> str:
        """Upload a local JPEG/PNG/WebP/GIF (at most 10 MB) and return its public URL.

        Upload right before submitting: how long uploaded URLs live is not documented.
        """
        file = Path(path)
        if not file.is_file():
            raise KlingValidationError(f"image_path={str(path)!r}: no such file")
        size = file.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise KlingValidationError(f"image_path={str(path)!r}: {size} bytes; the upload limit is 10 MB")
        data = file.read_bytes()
        mime = sniff_image_type(data[:16])
        if mime is None:
            guessed = mimetypes.guess_type(file.name)[0]
            raise KlingValidationError(
                f"image_path={str(path)!r}: not a JPEG, PNG, WebP or GIF image (looks like {guessed or 'unknown'})"
            )
        body = self.request(Call("POST", "/v1/uploads/images", "upload", upload=(file.name, data, mime)))
        url = body.get("data", {}).get("url") if isinstance(body, Mapping) else None
        if not isinstance(body, Mapping) or body.get("success") is False or not isinstance(url, str):
            message = body.get("message") if isinstance(body, Mapping) else "malformed body"
            raise KlingAPIError(f"upload failed: {message}", status=200, code="upload_failed")
        return url

    def download_video(
        self,
        source: str | KlingTask | Mapping[str, Any],
        path: str | os.PathLike[str],
        *,
        chunk_size: int = 1 << 16,
    ) -> Path:
        """Stream a finished video to ``path`` (written atomically) and return the path.

        :param source: the video URL, a :class:`KlingTask`, or a result dict (its ``expires_at`` is
            checked first: an expired URL is dead, and getting the video again means generating again).
        :raises KlingAPIError: the URL has expired, the download failed or the size did not match.
        """
        url, expires_at = _video_source(source)
        if expires_at is not None and datetime.now(timezone.utc) >= expires_at:
            raise KlingAPIError(
                f"the video URL expired at {expires_at.isoformat()}; generate the video again",
                code="url_expired",
            )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        for attempt in Retrying(**RetryPolicy().tenacity_kwargs()):
            with attempt:
                self._stream_to(url, target, settings, chunk_size)
        self.log.info("Saved the video to %s (%d bytes)", target, target.stat().st_size)
        return target

    def _stream_to(self, url: str, target: Path, settings: ClientSettings, chunk_size: int) -> None:
        # The video lives on a file host: the API key is never sent there.
        try:
            with self._http.get(url, stream=True, timeout=(CONNECT_TIMEOUT, settings.read_timeout)) as response:
                if response.status_code != 200:
                    read_response(
                        Call("GET", url, "download"),
                        response.status_code,
                        response.headers,
                        response.content[:2048],
                        settings.budget,
                    )
                expected = response.headers.get("Content-Length")
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
                written = 0
                try:
                    with os.fdopen(fd, "wb") as out:
                        for chunk in response.iter_content(chunk_size):
                            out.write(chunk)
                            written += len(chunk)
                    if expected is not None and int(expected) != written:
                        raise KlingAPIError(
                            f"download truncated: {written} of {expected} bytes", code="connection_error"
                        )
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        except requests.RequestException as err:
            raise transport_error("download", err) from None

    # ----------------------------------------------------------------- async

    async def __aenter__(self) -> KlingHook:
        from airflow_provider_kling.compat import get_async_connection, get_async_extra_dejson
        from airflow_provider_kling.sessions import borrow_session

        conn = await get_async_connection(self.kling_conn_id, hook=self)
        self._async_settings = self._settings_from(conn, await get_async_extra_dejson(conn))
        import aiohttp

        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=self._async_settings.read_timeout
        )
        self._session_cm = borrow_session()
        self._session = await self._session_cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        cm, self._session_cm, self._session = self._session_cm, None, None
        if cm is not None:
            await cm.__aexit__(*exc)

    async def _asend(self, settings: ClientSettings, call: Call) -> tuple[int, Mapping[str, str], bytes]:
        import aiohttp

        if self._session is None:
            raise RuntimeError("use 'async with KlingHook(...) as hook' before calling async methods")
        timeout = self._timeout
        try:
            async with self._session.request(
                call.method,
                settings.url(call.path),
                json=call.json,
                headers=settings.auth_headers,
                timeout=timeout,
                allow_redirects=False,
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
        try:
            return await self._aattempt(settings, call)
        except KlingError as err:
            if not (is_throttle(err) or is_transient(err)):
                raise
            first_failure: KlingError | None = err
        async for attempt in AsyncRetrying(**(policy or RetryPolicy()).tenacity_kwargs()):
            with attempt:
                if first_failure is not None:
                    failed, first_failure = first_failure, None
                    raise failed
                return await self._aattempt(settings, call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aattempt(self, settings: ClientSettings, call: Call) -> Any:
        delay = settings.budget.reserve()
        while delay:
            await asyncio.sleep(delay)
            delay = settings.budget.recheck()
        status, headers, body = await self._asend(settings, call)
        return read_response(call, status, headers, body, settings.budget)

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
