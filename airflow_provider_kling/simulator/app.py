"""The simulator's aiohttp application: ToAPIs routes, public file routes and ``/_sim`` control routes.

One middleware does what every API request shares, in this order: count and log the request,
check the Bearer key (401), fire a queued fault, apply the optional quota (429, counted when the
request arrives), wait the status latency, then run the route handler. ``slow`` sleeps *before*
handling, so a slow create creates its task after the delay.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .faults import FILE_FAULTS, FaultSpec
from .files import file_fault_response
from .state import ENDPOINTS, SimState
from .validation import ValidationFailure, message, validate_create


def _request_key(name: str, kind: type) -> Any:
    """A typed request-storage key where aiohttp has them (3.14+), else a plain string."""
    factory = getattr(web, "RequestKey", None)
    return factory(f"kling_simulator_{name}", kind) if factory else f"kling_simulator_{name}"


STATE_KEY = web.AppKey("kling_simulator_state", SimState)
KEY_HASH = _request_key("key_hash", str)
BODY = _request_key("body", object)
DROPPED = _request_key("dropped", bool)
#: The result video: 1 s, 160x90, H.264 (constrained baseline), 10 fps, faststart. Made once with
#: ``ffmpeg -f lavfi -i testsrc=size=160x90:rate=10:duration=1 -c:v libx264 -preset veryslow -crf 38
#: -pix_fmt yuv420p -profile:v baseline -map_metadata -1 -fflags +bitexact -flags:v +bitexact
#: -movflags +faststart sample.mp4``.
VIDEO = Path(__file__).parent / "assets" / "sample.mp4"
MAX_UPLOAD = 10 * 1024 * 1024
_EXTENSIONS = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_QUOTA = {"create": "submit", "status": "query", "balance": "query"}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "payment_required", 404: "not_found_error"}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def _envelope1(status: int, text: str) -> web.Response:
    """``{"error": {"code": <int>, "message", "type"}}``."""
    return _json({"error": {"code": status, "message": text, "type": _TYPES[status]}}, status)


def _envelope2(status: int, code: str, text: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": {"message", "type", "code": <str>}}``."""
    return _json({"error": {"message": text, "type": kind, "code": code}}, status, headers)


def _flat_error(text: str, status: int = 400) -> web.Response:
    """``{"success": false, "message"}``."""
    return _json({"success": False, "message": text}, status)


def _base_url(request: web.Request) -> str:
    # The Host header keeps the port that aiohttp drops from an absolute-form (proxied) target.
    return f"{request.scheme}://{request.headers.get('Host') or request.host}"


def _bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def _drop(request: web.Request) -> web.Response:
    """Close the connection without answering (the returned response is never written)."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


def _limited(
    status: int,
    retry_after: float,
    endpoint: str,
    language: str,
    *,
    http_date: bool = False,
    limit: float | None = None,
    remaining: int = 0,
) -> web.Response:
    """A 429 (``rate_limit_exceeded``) or 503 (``rate_limit_unavailable``) with ``Retry-After``."""
    seconds = math.ceil(retry_after)
    category = "async_submit" if endpoint == "create" else "async_query"
    headers = {
        "Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True) if http_date else str(seconds),
        "X-RateLimit-Category": category,
        "X-RateLimit-Limit": str(int(limit or (300 if category == "async_submit" else 3000))),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(time.time()) + seconds),
    }
    if status == 503:
        return _envelope2(
            503, "rate_limit_unavailable", message("unavailable", language), "service_unavailable", headers
        )
    return _envelope2(429, "rate_limit_exceeded", message("rate_limit", language), "rate_limit_error", headers)


def _fault_response(request: web.Request, spec: FaultSpec, endpoint: str, language: str) -> web.Response:
    """The response of a fault that replaces the handler entirely."""
    if spec.fault in ("rate_limit", "unavailable"):
        status = 429 if spec.fault == "rate_limit" else 503
        return _limited(status, spec.retry_after, endpoint, language, http_date=spec.retry_after_http_date)
    if spec.fault == "server_error" and spec.status in (502, 504):
        reason = "Bad Gateway" if spec.status == 502 else "Gateway Timeout"
        html = f"<html><body><h1>{spec.status} {reason}</h1></body></html>"
        return web.Response(status=spec.status, text=html, content_type="text/html")
    if spec.fault == "server_error":
        return _envelope2(spec.status, "internal_error", message("internal", language), "server_error")
    if spec.fault == "balance_failure":
        return _flat_error(message("balance_failure", language), 200)
    if spec.fault == "late_visibility":
        return _envelope1(404, message("not_found", language))
    return _drop(request)  # "drop"


def _truncated(response: web.StreamResponse) -> web.Response:
    """A 200 whose body is the first half of what would have been sent (``malformed``)."""
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        body, content_type = response.body, "application/json"
    else:
        body, content_type = VIDEO.read_bytes(), "video/mp4"
    return web.Response(status=200, body=body[: max(1, len(body) // 2)], content_type=content_type)


def _with_bom(response: web.Response) -> web.Response:
    """The same answer with a UTF-8 byte order mark before its JSON (``bom``), as some .NET and IIS
    fronts send it."""
    body = response.body if isinstance(response.body, bytes) else b""
    return web.Response(
        status=response.status, body=b"\xef\xbb\xbf" + body, headers={"Content-Type": "application/json; charset=utf-8"}
    )


async def _read_json(request: web.Request) -> Any:
    """The decoded JSON body (cached on the request), or ``None`` when it is not JSON."""
    if BODY not in request:
        try:
            request[BODY] = await request.json()
        except ValueError:
            request[BODY] = None
    return request[BODY]


#: Faults after which the route handler still runs (and the quota counts the request).
_HANDLED_FAULTS = ("slow", "malformed", "drop_after_create", "trickle", "bom")


async def _serve(request: web.Request, handler: Any, endpoint: str, state: SimState) -> web.StreamResponse:
    language = state.config.language
    key = None
    if endpoint != "files":
        key = state.authenticate(_bearer(request))
        if key is None:
            return _envelope1(401, message("auth", language))
        request[KEY_HASH] = key
    spec = state.take_fault(endpoint)
    handled = spec is None or spec.fault in _HANDLED_FAULTS
    if handled and key is not None and endpoint in _QUOTA and state.config.enforce_quota:
        # Counted on arrival, like a gateway in front of a slow backend: the time a request then
        # takes (status latency, a slow fault) never moves when it counted.
        wait, limit, remaining = state.acquire_quota(key, _QUOTA[endpoint], time.monotonic())
        if wait:
            return _limited(429, wait, endpoint, language, limit=limit, remaining=remaining)
    await _network_latency(endpoint, state)
    if spec is not None and spec.fault in FILE_FAULTS:
        return await file_fault_response(request, spec)
    if spec is not None and spec.fault == "slow":
        await asyncio.sleep(spec.delay)
    elif not handled:
        assert spec is not None
        return _fault_response(request, spec, endpoint, language)
    response: web.StreamResponse = await handler(request)
    if spec is not None and spec.fault == "malformed":
        return _truncated(response)
    if spec is not None and spec.fault == "drop_after_create":
        return _drop(request)
    if spec is not None and spec.fault == "trickle":
        return await _trickle(request, response, spec.delay)
    if spec is not None and spec.fault == "bom" and isinstance(response, web.Response):
        return _with_bom(response)
    return response


# -- network conditions (latency, trickling bodies, proxy-only) -----------------------------


async def _network_latency(endpoint: str, state: SimState) -> None:
    """``status_latency_seconds``: a slow status endpoint that holds no other request, or with
    ``status_workers`` a backend serving that many at once while the others queue."""
    config = state.config
    if endpoint != "status" or config.status_latency_seconds <= 0:
        return
    if config.status_workers <= 0:
        await asyncio.sleep(config.status_latency_seconds)
        return
    workers = state.status_gate(config.status_workers)
    async with workers:
        await asyncio.sleep(config.status_latency_seconds)


async def _trickle(request: web.Request, response: web.StreamResponse, interval: float) -> web.StreamResponse:
    """Send the status line and headers (with the full ``Content-Length``) at once, then the body one
    byte every ``interval`` seconds: each read is quick, the whole answer is not."""
    body = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b"{}"
    slow = web.StreamResponse(status=response.status, headers={"Content-Type": response.content_type})
    slow.content_length = len(body)
    await slow.prepare(request)
    try:
        for index in range(len(body)):
            await slow.write(body[index : index + 1])
            await asyncio.sleep(interval)
        await slow.write_eof()
    except ConnectionError:  # the client gave up: that is the point
        pass
    return slow


def _direct(request: web.Request) -> bool:
    """A request that reached the simulator without a forward proxy: origin-form, and its ``Host``
    is the address the simulator is bound to (a proxy tunnel carries the name the client asked for)."""
    if request.message.url.is_absolute():
        return False
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    bound = {"localhost", "127.0.0.1", "::1"} | ({str(sockname[0])} if sockname else set())
    host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
    return host in bound


@web.middleware
async def simulate(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count, log, authenticate, inject faults and apply quotas for the API and file routes."""
    endpoint = (request.match_info.route.name or "").split(":")[0]
    if endpoint not in ENDPOINTS:
        return await handler(request)
    state = request.app[STATE_KEY]
    if state.config.proxy_only and _direct(request):
        text = "proxy_only: this simulator answers only requests that come through a forward proxy"
        return _json({"error": {"code": 421, "message": text, "type": "misdirected_request"}}, 421)
    arrived = time.time()
    state.note_request(endpoint, arrived)
    body = await _read_json(request) if endpoint == "create" else None
    status: int | None = None
    retry_after: str | None = None
    try:
        response = await _serve(request, handler, endpoint, state)
        status = None if request.get(DROPPED) else response.status
        retry_after = response.headers.get("Retry-After")
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state.record(request.method, request.path, status, request.get(KEY_HASH), body, retry_after, arrived)


# -- API routes ----------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    """``POST /v1/videos/generations``."""
    state, now = request.app[STATE_KEY], time.time()
    language = state.config.language
    try:
        valid = validate_create(await _read_json(request), state.config.allowed_durations())
    except ValidationFailure as failure:
        error = {"code": 400, "message": failure.render(language), "type": _TYPES[400], "param": failure.field}
        return _json({"error": error}, 400)
    outcome, task = state.create_task(request[KEY_HASH], valid, now)
    if outcome == "insufficient":
        return _envelope1(402, message("payment", language))
    if task is None:  # "policy_422"
        error = {"code": "content_policy_violation", "message": message("policy_422", language), "type": _TYPES[400]}
        return _json({"error": error}, 422)
    return _json(task.view(now, _base_url(request), language, create=True))


async def status(request: web.Request) -> web.Response:
    """``GET /v1/videos/generations/{ref}`` (task id or ``client_business_id``)."""
    state, now = request.app[STATE_KEY], time.time()
    task = state.find_task(request[KEY_HASH], request.match_info["ref"], now)
    if task is None:
        return _envelope1(404, message("not_found", state.config.language))
    return _json(task.view(now, _base_url(request), state.config.language))


def _image_type(data: bytes, filename: str | None, content_type: str | None) -> str | None:
    """Sniff JPEG/PNG/WebP/GIF; else trust a matching extension *and* content type."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    by_extension = _EXTENSIONS.get((filename or "").rsplit(".", 1)[-1].lower())
    return by_extension if data and by_extension and by_extension == content_type else None


async def upload(request: web.Request) -> web.Response:
    """``POST /v1/uploads/images`` (multipart field ``file``, optional ``purpose``)."""
    state = request.app[STATE_KEY]
    language = state.config.language
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _flat_error(message("too_large", language))
    item = form.get("file")
    if not isinstance(item, web.FileField):
        return _flat_error(message("no_file", language))
    data = item.file.read()
    if len(data) > MAX_UPLOAD:
        return _flat_error(message("too_large", language))
    mime = _image_type(data, item.filename, item.content_type)
    if mime is None:
        return _flat_error(message("bad_type", language))
    token = secrets.token_hex(4)
    extension = {"image/jpeg": "jpg"}.get(mime, mime.split("/")[1])
    name = f"{int(time.time())}_{token}.{extension}"
    state.add_upload(name, data, mime)
    url = f"{_base_url(request)}/files/uploads/{name}"
    return _json(
        {
            "success": True,
            "message": "",
            "data": {"id": f"upload_{token}", "url": url, "mime_type": mime, "size": len(data)},
        }
    )


async def balance(request: web.Request) -> web.Response:
    """``GET /v1/balance``, ``/v1/user/balance`` and their aliases (one account per key)."""
    return _json(request.app[STATE_KEY].balance(request[KEY_HASH], time.time()))


async def video_file(request: web.Request) -> web.StreamResponse:
    """``GET|HEAD /files/videos/{id}.mp4``: the sample MP4 while the task's video is available."""
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    if not name.endswith(".mp4") or state.video_task(name[: -len(".mp4")], time.time()) is None:
        return _envelope1(404, message("file_not_found", state.config.language))
    return web.FileResponse(VIDEO, headers={"Content-Type": "video/mp4"})


async def upload_file(request: web.Request) -> web.Response:
    """``GET /files/uploads/{name}``: an uploaded image."""
    state = request.app[STATE_KEY]
    found = state.get_upload(request.match_info["name"])
    if found is None:
        return _envelope1(404, message("file_not_found", state.config.language))
    return web.Response(body=found[0], content_type=found[1])


# -- control routes ------------------------------------------------------------------------


def _control_error(exc: Exception) -> web.Response:
    return _json({"error": {"code": 400, "message": str(exc), "type": "invalid_request_error"}}, 400)


async def sim_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return _json({"ok": True})


async def sim_faults(request: web.Request) -> web.Response:
    """``GET`` lists, ``POST`` queues (one spec or a list), ``DELETE`` clears the fault queue."""
    state = request.app[STATE_KEY]
    if request.method == "DELETE":
        state.clear_faults()
    elif request.method == "POST":
        body = await _read_json(request)
        try:
            state.add_faults(*(body if isinstance(body, list) else [body]))
        except (ValueError, TypeError) as exc:
            return _control_error(exc)
    return _json({"faults": state.list_faults()})


async def sim_config(request: web.Request) -> web.Response:
    """``GET`` shows, ``POST`` changes (a JSON subset of :class:`SimulatorConfig`) the config."""
    state = request.app[STATE_KEY]
    if request.method == "POST":
        body = await _read_json(request)
        try:
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            state.set_config(**body)
        except (ValueError, TypeError) as exc:
            return _control_error(exc)
    return _json({"config": state.config.public()})


async def sim_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].stats())


async def sim_requests(request: web.Request) -> web.Response:
    """The last ``?limit=N`` request records (all kept ones without ``limit``)."""
    try:
        limit = int(request.query.get("limit", "0"))
    except ValueError as exc:
        return _control_error(exc)
    return _json({"requests": request.app[STATE_KEY].recent_requests(limit)})


def make_app(state: SimState) -> web.Application:
    """Build the aiohttp application around ``state``.

    TCP connections are counted only when it runs under :class:`~.server.SimulatorServer`
    (which hooks aiohttp's low-level server); everything else works with any runner.

    :param state: the simulator state (shared with :class:`~.server.SimulatorServer`).
    """
    app = web.Application(middlewares=[simulate], client_max_size=4 * MAX_UPLOAD)
    app[STATE_KEY] = state
    add = app.router.add_route
    add("POST", "/v1/videos/generations", create, name="create")
    add("GET", "/v1/videos/generations/{ref}", status, name="status")
    add("POST", "/v1/uploads/images", upload, name="upload")
    for index, path in enumerate(("/v1/balance", "/balance", "/v1/user/balance", "/user/balance")):
        add("GET", path, balance, name=f"balance:r{index}")
    app.router.add_get("/files/videos/{name}", video_file, name="files:video")
    app.router.add_get("/files/uploads/{name}", upload_file, name="files:upload")
    add("POST", "/_sim/reset", sim_reset)
    for method in ("GET", "POST", "DELETE"):
        add(method, "/_sim/faults", sim_faults)
    for method in ("GET", "POST"):
        add(method, "/_sim/config", sim_config)
    add("GET", "/_sim/stats", sim_stats)
    add("GET", "/_sim/requests", sim_requests)
    return app
