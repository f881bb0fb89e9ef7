"""Injected faults (a FIFO queue of specs) and the optional per-key quota (token buckets).

A fault spec is a dict such as ``{"fault": "rate_limit", "endpoint": "create", "count": 2}``; on the
command line it is written ``rate_limit:create:2`` (``name[:endpoint[:count[:key=value...]]]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Every fault name the simulator understands.
FAULTS: tuple[str, ...] = (
    "rate_limit",
    "unavailable",
    "server_error",
    "drop",
    "drop_after_create",
    "malformed",
    "slow",
    "balance_failure",
    "late_visibility",
    "trickle",
    "bom",  # the answer's JSON after a UTF-8 byte order mark, as some .NET and IIS fronts send it
)
# -- file-host faults (the public /files/... routes only) -----------------------------------
#: ``gzip``: a complete video sent with ``Content-Encoding: gzip`` although identity was asked for;
#: ``truncated_video``: the first half of the MP4 with a matching ``Content-Length``;
#: ``short_body``: the full ``Content-Length`` but half the body, then the connection is dropped;
#: ``expired_403``: S3's ``AccessDenied`` XML for an expired signed URL; ``gone_410``: a 410.
#: (A file-host 429 with ``Retry-After`` is ``rate_limit`` with ``endpoint="files"``.)
FILE_FAULTS = ("gzip", "truncated_video", "short_body", "expired_403", "gone_410")
FAULTS = (*FAULTS, *FILE_FAULTS)
#: Endpoints a fault can target. ``files`` covers the public ``/files/...`` routes.
ENDPOINTS = ("create", "status", "upload", "balance", "files", "any")
#: Faults that only make sense on one endpoint; with ``endpoint="any"`` they fire only there.
ONLY_ON = {"drop_after_create": "create", "balance_failure": "balance", "late_visibility": "status"}
ONLY_ON.update(dict.fromkeys(FILE_FAULTS, "files"))


@dataclass
class FaultSpec:
    """One queued fault.

    :param fault: one of :data:`FAULTS`.
    :param endpoint: one of :data:`ENDPOINTS`.
    :param count: how many matching requests it fires on; ``-1`` means forever.
    :param retry_after: seconds for ``Retry-After`` (``rate_limit``, ``unavailable``); 0 or
        negative sends ``0`` / a negative number, or with ``retry_after_http_date`` a date in the past.
    :param retry_after_http_date: send ``Retry-After`` as an HTTP date instead of seconds.
    :param delay: seconds to sleep before handling (``slow``); seconds between bytes (``trickle``:
        the status line and headers at once, then the body one byte at a time).
    :param status: HTTP status of ``server_error`` (500, or 502 for an HTML gateway page).
    """

    fault: str
    endpoint: str = "any"
    count: int = 1
    retry_after: float = 1.0
    retry_after_http_date: bool = False
    delay: float = 1.0
    status: int = 500

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; known: {', '.join(FAULTS)}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; known: {', '.join(ENDPOINTS)}")
        only = ONLY_ON.get(self.fault)
        if only and self.endpoint not in (only, "any"):
            raise ValueError(f"fault {self.fault!r} applies only to endpoint {only!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or (self.count < 1 and self.count != -1):
            raise ValueError("count must be a positive integer or -1 (forever)")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if not 400 <= int(self.status) <= 599:
            raise ValueError("status must be an HTTP error status")

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> FaultSpec:
        """Build a spec from its JSON form; unknown keys are an error.

        :param spec: e.g. ``{"fault": "slow", "endpoint": "status", "delay": 2}``.
        """
        if not isinstance(spec, dict):
            raise ValueError("a fault spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault spec keys: {', '.join(sorted(unknown))}")
        if "fault" not in spec:
            raise ValueError("a fault spec needs 'fault'")
        values = dict(spec)
        if "endpoint" not in values:
            values["endpoint"] = ONLY_ON.get(values["fault"], "any")
        return cls(**values)

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse the command-line form ``name[:endpoint[:count[:key=value...]]]`` or a JSON object.

        :param text: e.g. ``"rate_limit:create:3"``, ``"server_error:status:2:status=502"``.
        """
        text = text.strip()
        if text.startswith("{"):
            return cls.from_dict(json.loads(text))
        name, *rest = text.split(":")
        spec: dict[str, Any] = {"fault": name}
        positional = [part for part in rest if "=" not in part]
        if positional:
            spec["endpoint"] = positional[0]
        if len(positional) > 1:
            spec["count"] = int(positional[1])
        for part in (part for part in rest if "=" in part):
            key, _, raw = part.partition("=")
            try:
                spec[key] = json.loads(raw)
            except ValueError:
                spec[key] = raw
        return cls.from_dict(spec)

    def matches(self, endpoint: str) -> bool:
        """Whether this fault fires on a request to ``endpoint``."""
        only = ONLY_ON.get(self.fault)
        if only and endpoint != only:
            return False
        return self.endpoint in (endpoint, "any")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


class FaultQueue:
    """Faults waiting to fire, oldest first. Not thread-safe: the simulator state holds the lock."""

    def __init__(self) -> None:
        self._specs: list[FaultSpec] = []

    def add(self, spec: FaultSpec) -> None:
        """Queue ``spec`` behind the faults already queued."""
        self._specs.append(spec)

    def take(self, endpoint: str) -> FaultSpec | None:
        """Fire the oldest fault matching ``endpoint``: use up one of its count, and return it."""
        for spec in self._specs:
            if spec.matches(endpoint):
                if spec.count > 0:
                    spec.count -= 1
                    if spec.count == 0:
                        self._specs.remove(spec)
                return spec
        return None

    def clear(self) -> None:
        """Forget every queued fault."""
        self._specs.clear()

    def to_list(self) -> list[dict[str, Any]]:
        """The queued faults in JSON form (``count`` is what is left)."""
        return [spec.to_dict() for spec in self._specs]


class Gcra:
    """One rate limit as a GCRA ("generic cell rate") bucket: ``limit`` requests per ``window`` seconds.

    :param limit: requests allowed per window (the bucket allows that many in a burst).
    :param window: the window in seconds.
    """

    def __init__(self, limit: float, window: float) -> None:
        self.limit = limit
        self.interval = window / limit
        self.tolerance = window - self.interval
        self.tat = 0.0  # theoretical arrival time

    def wait(self, now: float) -> float:
        """Seconds until a request would be allowed (0 = allowed now)."""
        return max(0.0, self.tat - self.tolerance - now)

    def consume(self, now: float) -> None:
        """Count one allowed request."""
        self.tat = max(self.tat, now) + self.interval

    def remaining(self, now: float) -> int:
        """Requests still allowed right now."""
        return max(0, math.floor((now + self.tolerance + self.interval - max(self.tat, now)) / self.interval + 1e-9))


class Quota:
    """The per-second, per-minute and 10 s burst limits of one bucket (submit or query) of one key.

    :param per_sec: requests per second.
    :param per_min: requests per minute.
    :param burst_10s: requests per 10 s.
    """

    def __init__(self, per_sec: float, per_min: float, burst_10s: float) -> None:
        self.per_min = per_min
        self._limits = (Gcra(per_sec, 1.0), Gcra(per_min, 60.0), Gcra(burst_10s, 10.0))

    def acquire(self, now: float) -> float:
        """Take one request; return 0 when allowed, else the seconds to wait (nothing is consumed)."""
        wait = max(limit.wait(now) for limit in self._limits)
        if wait > 0:
            return wait
        for limit in self._limits:
            limit.consume(now)
        return 0.0

    def remaining(self, now: float) -> int:
        """Requests left in the per-minute allowance."""
        return self._limits[1].remaining(now)
