"""What the hook's sync and async paths share: settings, calls, response handling and retries.

Both transports (``requests`` in workers, ``aiohttp`` in triggers) send a :class:`Call` and hand
``(status, headers, body)`` to :func:`read_response`; both retry through the one
:class:`RetryPolicy`. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import ipaddress
import logging
import os
import random
import re
import ssl
import sys
import time
import unicodedata
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit

from tenacity import RetryCallState

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingError,
    KlingRateLimitError,
    KlingValidationError,
    error_from_response,
    loads_json,
    proxy_refusal,
)
from airflow_provider_kling.ratelimit import (
    DEFAULT_GROUP,
    DEFAULT_REQUESTS_PER_MINUTE,
    DEFAULT_SUBMITS_PER_MINUTE,
    GROUP_LIMITS,
    QUERY,
    SUBMIT,
    KeyBudgets,
    RequestBudget,
    Slot,
    budgets_for,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://toapis.com"
CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
UPLOAD_READ_TIMEOUT = 60.0
#: The slowest uplink an upload attempt is sized for (512 kbit/s): a 10 MB image gets 160 s to go
#: out on top of connect and read timeouts (each block of it still has the connect timeout).
SLOW_LINK_BYTES_PER_SECOND = 64 * 1024
MAX_RETRY_AFTER = 600.0
#: Wall-clock limit of a call (all its attempts and waits) when the caller gives no deadline: long
#: enough to ride out a per-minute quota window (several ``Retry-After`` waits) and the transient
#: retries (1 + 2 + 4 s of backoff plus their attempts), short enough that a dead or throttled API
#: fails the task for Airflow's own retries instead of holding a worker slot indefinitely.
DEFAULT_CALL_SECONDS = 300.0
#: Wall-clock limit of :meth:`KlingHook.test_connection`: the UI waits for its answer.
TEST_CONNECTION_SECONDS = 30.0
#: The smallest wait after a 429/503 that gave no usable ``Retry-After``.
THROTTLE_FLOOR = 1.0
#: Codes given to failures that produced no usable HTTP response.
TRANSPORT_CODES = frozenset({"connection_error", "timeout", "malformed_response"})


class Secret(str):
    """A string whose ``repr`` never shows its value (the API key)."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class ClientSettings:
    """Everything a call needs from the Airflow connection.

    :param base_url: scheme, host and optional port, no trailing slash.
    :param api_key: the bearer key; its ``repr`` is masked.
    :param read_timeout: read timeout per request, seconds.
    :param requests_per_minute: client-side query budget (status, balance, upload) for this key in
        this process: the ``max_requests_per_minute`` extra, else the group's query quota.
    :param proxy: the ``proxy`` extra (a URL); ``None`` = the standard proxy environment.
    :param verify: the ``verify`` extra (``True``/``False`` or a CA bundle path); ``None`` = the
        standard CA environment (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), else the defaults.
    :param submits_per_minute: client-side submit budget (creates) for this key in this process:
        the ``max_submits_per_minute`` extra, else the group's submit quota.
    :param rate_limit_group: the ``rate_limit_group`` extra (``default``, ``vip`` or ``svip``), which
        picks the documented quotas used when the numbers are not given.
    """

    base_url: str
    api_key: Secret = field(repr=False)
    read_timeout: float = DEFAULT_READ_TIMEOUT
    requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE
    business_id_prefix: str = ""
    proxy: str | None = field(default=None, repr=False)
    verify: bool | str | None = None
    submits_per_minute: float = DEFAULT_SUBMITS_PER_MINUTE
    rate_limit_group: str = DEFAULT_GROUP

    @classmethod
    def from_connection(cls, conn: Any, extras: Mapping[str, Any], conn_id: str) -> ClientSettings:
        """Read an Airflow connection (host/port/schema/password and the extras).

        :raises KlingValidationError: the host, timeout, rate-limit group, budgets, proxy or verify is
            malformed (names the field).
        :raises KlingAuthError: the connection has no API key, or the key holds a control or
            non-Latin-1 character (surrounding whitespace is stripped).
        """
        problems = []
        base_url = ""
        try:
            base_url = base_url_from(conn.host, getattr(conn, "port", None), getattr(conn, "schema", None))
        except ValueError as err:
            problems.append(f"connection {conn_id} host={conn.host!r}: {err}")
        group = _extra(extras, "rate_limit_group", DEFAULT_GROUP)
        if isinstance(group, str) and group.strip().lower() in GROUP_LIMITS:
            group = group.strip().lower()
        else:
            problems.append(
                f"connection {conn_id} extra rate_limit_group={group!r}: must be one of {', '.join(GROUP_LIMITS)}"
            )
            group = DEFAULT_GROUP
        submits, queries = GROUP_LIMITS[group]
        numbers = {}
        for key, default in (
            ("timeout", DEFAULT_READ_TIMEOUT),
            ("max_requests_per_minute", queries),
            ("max_submits_per_minute", submits),
        ):
            raw = _extra(extras, key, default)
            try:
                value = float(raw)
                if isinstance(raw, bool) or not 0 < value < 1e9:
                    raise ValueError
                numbers[key] = value
            except (TypeError, ValueError):
                problems.append(f"connection {conn_id} extra {key}={raw!r}: must be a positive number")
        prefix = _extra(extras, "business_id_prefix", "")
        if not isinstance(prefix, str) or len(prefix) > 16 or not all(c.isalnum() or c in "_-" for c in prefix):
            problems.append(
                f"connection {conn_id} extra business_id_prefix={prefix!r}: at most 16 characters "
                "of A-Z, a-z, 0-9, _ and -"
            )
        proxy = _checked(problems, conn_id, "proxy", _extra(extras, "proxy", None), proxy_from_extra)
        verify = _checked(problems, conn_id, "verify", _extra(extras, "verify", None), verify_from_extra)
        if problems:
            raise KlingValidationError(problems)
        key = api_key_from(conn.password, conn_id)
        return cls(
            base_url,
            key,
            numbers["timeout"],
            numbers["max_requests_per_minute"],
            prefix,
            proxy,
            verify,
            numbers["max_submits_per_minute"],
            group,
        )

    @cached_property
    def budgets(self) -> KeyBudgets:
        """The process-wide submit and query budgets of this key (looked up once per settings object)."""
        return budgets_for(self.base_url, self.api_key, self.submits_per_minute, self.requests_per_minute)

    @cached_property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}

    def url(self, path: str) -> str:
        return self.base_url + path

    @cached_property
    def api_proxy(self) -> str | None:
        """The proxy for API calls (decided once per settings object, see :func:`proxy_for`)."""
        return proxy_for(self.base_url, self.proxy)

    def check_async_transport(self) -> None:
        """Raise when the async transport (the trigger's aiohttp session) cannot reach the API from
        this interpreter: an ``https://`` API through an ``https://`` proxy needs TLS inside TLS, which
        asyncio only has from Python 3.11 (on 3.10 every poll would fail as a connection error).

        :raises KlingValidationError: that case, with the ways out.
        """
        proxy = self.api_proxy
        if sys.version_info >= (3, 11) or not proxy or not self.base_url.startswith("https://"):
            return
        if not proxy.lower().startswith("https://"):
            return
        raise KlingValidationError(
            f"the trigger cannot reach {self.base_url} through the https:// proxy {_mask_userinfo(proxy)}: "
            f"asyncio on Python {sys.version_info.major}.{sys.version_info.minor} cannot start TLS inside a "
            "TLS connection (Python 3.11 can). Use an http:// proxy URL (the API's TLS still runs end to end "
            "through the CONNECT tunnel), run the triggerer on Python 3.11 or later, or set deferrable=False"
        )

    @cached_property
    def ca_verify(self) -> bool | str:
        """``requests``' ``verify`` for this connection (see :func:`tls_verify`)."""
        return tls_verify(self.verify)


def _checked(problems: list[str], conn_id: str, key: str, raw: Any, parse: Any) -> Any:
    """``parse(raw)``; a ``ValueError`` becomes a problem naming the extra and its (masked) value."""
    if raw is None:
        return None
    try:
        return parse(raw)
    except ValueError as err:
        shown = _mask_userinfo(raw) if isinstance(raw, str) else raw
        problems.append(f"connection {conn_id} extra {key}={shown!r}: {err}")
        return None


def _mask_userinfo(url: str) -> str:
    """``url`` with any password replaced by ``***`` (proxy URLs may carry credentials)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def proxy_from_extra(raw: Any) -> str:
    """The ``proxy`` extra: an ``http://`` or ``https://`` URL with a host.

    :raises ValueError: anything else.
    """
    allowed = "expected a proxy URL such as http://proxy.example:3128"
    if not isinstance(raw, str) or any(c.isspace() for c in raw.strip()):
        raise ValueError(allowed)
    parts = urlsplit(raw.strip())
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"the port is not a number from 1 to 65535; {allowed}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(allowed)
    return raw.strip()


def verify_from_extra(raw: Any) -> bool | str:
    """The ``verify`` extra: ``true``/``false`` (bool or text) or the path of a CA bundle file.

    :raises ValueError: anything else, or a path that is not a readable file.
    """
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in ("true", "false"):
            return word == "true"
        path = os.path.expanduser(raw.strip())
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return path
        raise ValueError("no readable CA bundle file at that path; expected true, false or a CA bundle path")
    raise ValueError("expected true, false or a CA bundle path")


def api_key_from(raw: Any, conn_id: str) -> Secret:
    """The API key with surrounding whitespace stripped.

    :raises KlingAuthError: no key, or a control or non-Latin-1 character inside it (named with
        its position; the key itself is never shown).
    """
    key = raw.strip() if isinstance(raw, str) else ""
    if not key:
        raise KlingAuthError(f"connection {conn_id} has no API key: set its password to the ToAPIs key")
    for position, char in enumerate(key, start=1):
        if ord(char) > 0xFF or unicodedata.category(char) in ("Cc", "Cf"):
            name = unicodedata.name(char, "control character")
            raise KlingAuthError(
                f"connection {conn_id}: the API key holds {name.lower()} (U+{ord(char):04X}) at character "
                f"{position} of {len(key)}; only printable Latin-1 characters can be sent: paste the key again"
            )
    return Secret(key)


def proxy_for(url: str, override: str | None = None) -> str | None:
    """The proxy to reach ``url`` through, or ``None`` to connect directly: the one decision for the
    sync and async transports, API calls, uploads and downloads.

    The connection's ``proxy`` extra wins; else the standard environment (``HTTPS_PROXY`` /
    ``HTTP_PROXY`` / ``ALL_PROXY`` by the URL's scheme, in either case, lowercase first, as
    ``urllib.request.getproxies_environment()`` reads them), unless ``NO_PROXY`` lists the host
    (see :func:`bypasses_proxy`). An environment proxy is checked only when it is chosen.

    :param url: the URL about to be requested.
    :param override: the connection's ``proxy`` extra (already checked by :func:`proxy_from_extra`).
    :raises KlingValidationError: the environment's proxy for ``url`` is not an ``http://`` or
        ``https://`` URL with a host and a valid port: the call must end before anything is sent.
    """
    if override:
        return override
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    key = scheme if proxies.get(scheme) else "all"
    proxy = proxies.get(key)
    if not proxy or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # not a URL anything can be sent to; no port-specific entry matches it
        port = None
    if bypasses_proxy(parts.hostname, port, proxies.get("no", "")):
        return None
    return _env_proxy_url(proxy, _env_proxy_name(f"{key}_proxy", proxy))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` sends ``host`` direct (as curl, Go and ``requests`` read it).

    Entries are separated by commas and/or whitespace, in any case; ``*`` alone bypasses every
    host. An entry may carry a port (``host:port``, ``[v6]:port``), which must then equal ``port``.
    An IP host (v4 or v6, bracketed or not) matches an equal IP or a CIDR range of its family
    (``10.0.0.0/8``, ``fd00::/8``), never a name. A name matches an entry equal to it or to a
    parent domain; a leading ``.`` or ``*.`` and a trailing ``.`` are ignored (``*.corp`` and
    ``.corp`` match ``files.corp`` and ``corp``).

    :param host: the URL's host: a name, or an IP with or without brackets.
    :param port: the URL's port: explicit, else the scheme's default (``None`` = unknown).
    :param no_proxy: the ``NO_PROXY`` value.
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in no_proxy.replace(",", " ").lower().split():
        if entry == "*":
            return True
        split = _no_proxy_entry(entry)
        if split is None or (split[1] is not None and split[1] != port):
            continue
        name = split[0]
        try:
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            network = None
        if network is not None:
            if ip is not None and ip in network:
                return True
            continue
        name = (name[2:] if name.startswith("*.") else name).lstrip(".").rstrip(".")
        if ip is None and name and (host == name or host.endswith(f".{name}")):
            return True
    return False


def _no_proxy_entry(entry: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of one ``NO_PROXY`` entry (``port`` ``None`` when it has none); ``None`` when
    it is unusable (an unclosed bracket, a port that is not a number)."""
    port_text: str | None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:  # a name, an IPv4 address or range, or a bare IPv6 address or range
        host, port_text = entry, None
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()):
        return None
    return host, int(port_text)


def _env_proxy_name(name: str, value: str) -> str:
    """The environment variable ``value`` was read from: ``name`` (``https_proxy``, ``all_proxy``...)
    in the case ``urllib.request.getproxies_environment()`` took it from (lowercase wins)."""
    for candidate in (name, name.upper(), *sorted(n for n in os.environ if n.lower() == name)):
        if os.environ.get(candidate) == value:
            return candidate
    return name.upper()


def _env_proxy_url(value: str, name: str) -> str:
    """An environment proxy as a URL (``http://`` when it has no scheme), checked like the extra.

    :param value: the variable's value.
    :param name: the variable's name, for the error.
    :raises KlingValidationError: not an ``http://`` or ``https://`` URL with a host and a valid
        port; names the variable and shows the value with any password masked.
    """
    text = value.strip()
    url = text if "://" in text else f"http://{text}"
    try:
        return proxy_from_extra(url)
    except ValueError as err:
        shown = _mask_userinfo(url) if "://" in text else _mask_userinfo(url).partition("://")[2]
        raise KlingValidationError(
            f"environment variable {name}={shown!r}: {err}; only http:// and https:// proxies are "
            "supported; set the connection's proxy extra, or list the host in NO_PROXY"
        ) from None


def tls_verify(override: bool | str | None = None) -> bool | str:
    """How to verify TLS: ``False``, ``True`` (the defaults) or a CA bundle path.

    The ``verify`` extra wins; else ``REQUESTS_CA_BUNDLE``, then ``SSL_CERT_FILE``.
    """
    if override is not None:
        return override
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(name, "").strip()
        if path:
            return path
    return True


@functools.lru_cache(maxsize=32)
def ssl_context(cafile: str) -> ssl.SSLContext:
    """A verifying client context trusting only ``cafile`` (one per path, shared by every request)."""
    return ssl.create_default_context(cafile=cafile)


def aiohttp_ssl(verify: bool | str) -> ssl.SSLContext | bool:
    """aiohttp's per-request ``ssl=`` for :func:`tls_verify`'s answer."""
    return ssl_context(verify) if isinstance(verify, str) else verify


def _extra(extras: Mapping[str, Any], key: str, default: Any) -> Any:
    """An extra as the connection form stores it (plain or ``extra__kling__`` prefixed; empty = default)."""
    value = extras.get(key, extras.get(f"extra__kling__{key}"))
    return default if value is None or value == "" else value


def base_url_from(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """The API base URL for a connection's ``host`` (``https://toapis.com`` when empty).

    A host may carry a scheme and port; without a scheme it means ``https://`` unless ``schema`` is
    ``http``. A separate ``port`` is appended when the host has none. A trailing ``/v1``, or ``/v1``
    and an endpoint (``https://toapis.com/v1/videos/generations`` pasted from the API docs), is
    dropped: the provider adds the API's paths itself.
    """
    text = (host or "").strip()
    if not text:
        return DEFAULT_BASE_URL
    scheme = (schema or "").strip().lower()
    if scheme and scheme not in ("http", "https"):
        scheme = ""
    if "://" not in text:
        text = f"{scheme or 'https'}://{text}"
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("the base URL must use http:// or https://")
    if not parts.hostname or any(c.isspace() for c in text) or parts.username or parts.password:
        raise ValueError("expected a base URL such as https://toapis.com or http://127.0.0.1:8765")
    try:
        has_port = parts.port is not None
    except ValueError:
        raise ValueError("the port in the base URL is not a number from 1 to 65535") from None
    netloc = parts.netloc
    if port and not has_port:
        netloc = f"{netloc}:{int(port)}"
    # "/v1" and an endpoint pasted from the API docs are the provider's to add, not the host's.
    path = _API_PATH.sub("", parts.path.rstrip("/"))
    return f"{parts.scheme.lower()}://{netloc}{path}"


#: The API's own path at the end of a host: ``/v1``, or ``/v1`` and one of its endpoints.
_API_PATH = re.compile(r"/v1(/(videos/generations(/[^/]*)?|balance|user/balance|uploads/images))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Call:
    """One API call: where it goes and how to read its answer.

    :param what: short name for logs and errors (``create``, ``status``, ...).
    :param missing_ok: a 404 means "no such task" and returns ``None`` instead of raising.
    :param bucket: the API quota it counts against: ``submit`` for a create, else ``query``.
    """

    method: str
    path: str
    what: str
    json: Mapping[str, Any] | None = None
    missing_ok: bool = False
    upload: tuple[str, bytes, str] | None = None
    bucket: str = QUERY

    @classmethod
    def create(cls, body: Mapping[str, Any]) -> Call:
        return cls("POST", "/v1/videos/generations", "create", json=body, bucket=SUBMIT)

    @classmethod
    def status(cls, task_or_business_id: str, missing_ok: bool = False) -> Call:
        return cls(
            "GET",
            f"/v1/videos/generations/{quote(task_or_business_id, safe='')}",
            "status",
            missing_ok=missing_ok,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds, from delta-seconds or an HTTP date, at most :data:`MAX_RETRY_AFTER`.

    ``None`` (no hint: the caller's backoff applies) when absent, unreadable, zero or negative, or a
    date that has passed: such a value must never turn into a retry loop without pauses.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds <= 0:  # NaN, now or in the past
        return None
    return min(MAX_RETRY_AFTER, seconds)


def read_response(
    call: Call, status: int, headers: Mapping[str, str], body: bytes, budgets: KeyBudgets, slot: Slot | None = None
) -> Any:
    """The decoded JSON of a successful response, or the typed error of a failed one.

    A 429 slows the bucket its ``X-RateLimit-Category`` names (else the call's bucket) and pauses
    every caller of that bucket for its ``Retry-After``; a 503 ``Retry-After`` (the submit limiter
    is down) pauses the call's bucket; ``slot``, the budget slot the request was sent on, tells a
    429 to a request sent before the last slow-down from one sent at the current pace. A 404 of a ``missing_ok`` call returns ``None``. A 2xx whose
    body is not JSON raises a retryable ``malformed_response``.
    """
    if 200 <= status < 300:
        try:
            return loads_json(body)
        except ValueError:
            raise KlingAPIError(
                f"{call.what} returned a malformed body ({status}, {len(body)} bytes)",
                status=status,
                code="malformed_response",
            ) from None
    if status == 404 and call.missing_ok:
        return None
    if 300 <= status < 400:
        raise redirect_error(call.what, status, headers.get("Location"))
    retry_after = parse_retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    if status == 429:
        limited = budgets.limited(call.bucket, headers)
        same_bucket = limited is budgets.bucket(call.bucket)
        limited.throttled(retry_after, sent_generation=slot.generation if slot and same_bucket else None)
    elif retry_after is not None:
        budgets.bucket(call.bucket).pause(retry_after)
    return _raise(error_from_response(status, body, retry_after=retry_after, what=call.what))


def redirect_error(what: str, status: int, location: str | None) -> KlingAPIError:
    """A redirect of an API call: the connection's host is not where the API is served (``http://``
    behind an HTTPS-only front, another host name). API calls never follow redirects (the key would
    go along, and a create must not be re-sent elsewhere); the error names where to point the host.
    """
    target = urlsplit(location or "")
    shown = f"{target.scheme}://{target.netloc}{target.path}" if target.scheme and target.netloc else target.path
    hint = (
        f"set the connection's host to {target.scheme}://{target.netloc}"
        if target.scheme in ("http", "https") and target.netloc
        else "check the connection's host"
    )
    return KlingAPIError(
        f"{what} was redirected ({status} to {shown or 'no Location'}): the API is not served at the "
        f"connection's host; {hint}",
        status=status,
        code="redirect",
    )


def _raise(err: KlingError) -> Any:
    raise err


def is_throttle(err: BaseException) -> bool:
    """429, or 503 (the submit limiter is down): waited out until the deadline."""
    return isinstance(err, KlingRateLimitError) or (isinstance(err, KlingAPIError) and err.status == 503)


def is_transient(err: BaseException) -> bool:
    """Other 5xx, connection errors, timeouts and malformed bodies: retried a bounded number of times."""
    if not isinstance(err, KlingAPIError) or is_throttle(err):
        return False
    return (
        (err.status is not None and err.status >= 500)
        or (err.status is None and err.code in TRANSPORT_CODES)
        or err.code == "malformed_response"
    )


@dataclass
class RetryPolicy:
    """When to try a call again, shared by the sync and async paths (tenacity).

    Throttles (429/503) are waited out, honouring ``Retry-After`` or else exponential backoff with
    jitter, for as long as the deadline allows. Transient errors are retried ``transient_attempts``
    times in all. Anything else (400, 401, 402, 404, 422) is raised at once.

    A 429/503 without a usable ``Retry-After`` waits the backoff, never less than ``throttle_floor``.

    :param deadline: wall-clock epoch seconds by which the call ends: no attempt or wait runs past
        it; ``None`` = ``default_seconds`` from when the call starts.
    :param transient_attempts: attempts in all for transient errors (1 = no retry).
    :param throttle_retries: whether 429/503 are waited out at all (``False`` = one attempt).
    :param default_seconds: the call's wall-clock limit when ``deadline`` is ``None``.
    """

    deadline: float | None = None
    transient_attempts: int = 4
    throttle_retries: bool = True
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    default_seconds: float = DEFAULT_CALL_SECONDS
    throttle_floor: float = THROTTLE_FLOOR

    def bounded(self) -> RetryPolicy:
        """This policy with a concrete deadline (``default_seconds`` from now when it has none)."""
        if self.deadline is not None:
            return self
        return dataclasses.replace(self, deadline=time.time() + self.default_seconds)

    @classmethod
    def single_attempt(cls, deadline: float | None = None) -> RetryPolicy:
        """One attempt, no waiting (a poll of a wait), ending by ``deadline`` when one is given."""
        return cls(deadline=deadline, transient_attempts=1, throttle_retries=False)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, failures - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def tenacity_kwargs(self) -> dict[str, Any]:
        """``retry``/``stop``/``wait`` for one call: use with ``Retrying`` or ``AsyncRetrying``."""
        counts = {"transient": 0, "throttles": 0}
        state = {"wait": 0.0}
        deadline = self.bounded().deadline
        assert deadline is not None

        def retry(rs: RetryCallState) -> bool:
            err = rs.outcome.exception() if rs.outcome else None
            if err is None:
                return False
            if is_throttle(err):
                counts["throttles"] += 1
                hint = getattr(err, "retry_after", None)
                backoff = max(self.throttle_floor, self._backoff(counts["throttles"]))
                state["wait"] = hint if hint is not None else backoff
                return self.throttle_retries
            if is_transient(err):
                counts["transient"] += 1
                state["wait"] = self._backoff(counts["transient"])
                return counts["transient"] < self.transient_attempts
            return False

        def stop(rs: RetryCallState) -> bool:
            return time.time() + float(state["wait"]) > deadline

        def wait(rs: RetryCallState) -> float:
            seconds = float(state["wait"])
            err = rs.outcome.exception() if rs.outcome else None
            log.warning("Kling %s; retrying in %.1f s", err, seconds)
            return seconds

        return {"retry": retry, "stop": stop, "wait": wait, "reraise": True}


def attempt_seconds(settings: ClientSettings, call: Call, deadline: float) -> float:
    """The wall-clock limit of one attempt: connect plus read timeout (upload: its longer read
    timeout, plus the time to send its file at :data:`SLOW_LINK_BYTES_PER_SECOND`), cut to what is
    left before ``deadline`` (epoch seconds).

    :raises KlingAPIError: ``timeout`` when the deadline has passed (nothing is sent).
    """
    read = settings.read_timeout
    if call.upload:
        read = max(read, UPLOAD_READ_TIMEOUT) + len(call.upload[1]) / SLOW_LINK_BYTES_PER_SECOND
    left = deadline - time.time()
    if left <= 0:
        raise KlingAPIError(f"{call.what} timed out (deadline passed)", code="timeout")
    return min(CONNECT_TIMEOUT + read, left)


def slot_wait(budget: RequestBudget, deadline: float, what: str, *, after: Slot | None = None) -> Slot:
    """A budget slot: sleep its ``delay``, then call again with ``after=`` the slot until the delay
    is 0 (see :meth:`RequestBudget.reserve` / :meth:`~RequestBudget.recheck`).

    :raises KlingRateLimitError: ``request_budget`` at once, without taking a slot, when the slot
        comes after ``deadline`` (epoch seconds): a wait that cannot end in time is not started. It
        is a throttle, not a fault: callers wait it out like a 429 (the pace may grow back) until
        their deadline.
    """
    left = max(0.0, deadline - time.time())
    slot = budget.reserve(max_wait=left) if after is None else budget.recheck(after, max_wait=left)
    if slot is None:
        raise KlingRateLimitError(
            f"{what} rate limited by the client's request budget (no slot before the deadline)",
            code="request_budget",
        )
    return slot


#: How ``http.client`` reports a proxy's answer to CONNECT other than 200 (under ``requests``'
#: ``ProxyError``); aiohttp gives it as ``ClientHttpProxyError.status``.
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})")


def tunnel_status(err: BaseException) -> int | None:
    """The status a proxy answered a CONNECT with, from either transport's error; ``None`` if none."""
    if type(err).__name__ == "ClientHttpProxyError":
        status = getattr(err, "status", None)
        return status if isinstance(status, int) else None
    if "ProxyError" in type(err).__name__:
        found = _TUNNEL_REFUSED.search(str(err))
        return int(found.group(1)) if found else None
    return None


def transport_error(what: str, err: BaseException, timed_out: bool = False) -> KlingAPIError:
    """A connection error or timeout as a retryable :class:`KlingAPIError` (type only, no URL); a
    proxy's refusal of the tunnel as :func:`~.exceptions.proxy_refusal` (final unless a 5xx).

    :param timed_out: the attempt's wall-clock limit had passed (whatever the library called it).
    """
    status = tunnel_status(err)
    if status is not None:
        return proxy_refusal(what, status)
    timed_out = timed_out or "timeout" in type(err).__name__.lower() or isinstance(err, TimeoutError)
    code = "timeout" if timed_out else "connection_error"
    kind = "timed out" if timed_out else f"connection failed ({type(err).__name__})"
    return KlingAPIError(f"{what} {kind}", code=code)
