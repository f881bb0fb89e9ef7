"""Simulator configuration: timings, credits, accepted keys, rules and quotas."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

PRESETS: dict[str, dict[str, float]] = {
    "test": {"queued_seconds": 1.0, "total_seconds": 5.0},
    "realistic": {"queued_seconds": 10.0, "total_seconds": 90.0},
}


def parse_durations(spec: str | Collection[int]) -> frozenset[int]:
    """Turn ``"5,10,15"``, ``"3-15"`` (or a collection of ints) into the set of accepted durations."""
    if not isinstance(spec, str):
        return frozenset(int(value) for value in spec)
    values: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        low, sep, high = part.partition("-")
        values.update(range(int(low), int(high) + 1) if sep else [int(low)])
    if not values or min(values) < 1:
        raise ValueError(f"bad durations {spec!r}")
    return frozenset(values)


@dataclass
class SimulatorConfig:
    """Timings, credits, accepted keys, rules and quotas of the simulator.

    :param queued_seconds: time a task stays ``queued``.
    :param total_seconds: time from creation to ``completed``.
    :param speed: divides ``queued_seconds``, ``total_seconds`` and ``ttl_seconds`` (not marker values).
    :param ttl_seconds: ``expires_at`` = ``completed_at`` + ttl; the video 404s afterwards.
    :param initial_credits: credits of a key when it is first seen.
    :param api_keys: accepted keys; ``None`` accepts any non-empty key.
    :param durations: ``"5,10,15"`` (default) or ``"3-15"`` (newer rule).
    :param enforce_quota: apply the documented default-group async quota per key.
    :param not_found_grace_seconds: a new task 404s for this long ("late visibility").
    :param language: ``"en"`` or ``"zh"``, the language of error messages.
    :param faults: fault specs (dicts, or CLI strings) queued at start-up.
    :param status_latency_seconds: every status answer waits this long (other requests go on).
    :param status_workers: status answers served at once (0 = no limit): with a latency, a backend
        whose few workers each take that long per answer while the rest queue.
    :param proxy_only: answer API and file requests only when they come through a forward proxy
        (absolute-form target, or a ``Host`` other than the address the simulator is bound to);
        a direct connection gets 421, so a client that bypasses its proxy fails loudly.
    """

    queued_seconds: float = 1.0
    total_seconds: float = 5.0
    speed: float = 1.0
    ttl_seconds: float = 86400
    initial_credits: int = 100000
    api_keys: Collection[str] | None = None
    durations: str = "5,10,15"
    enforce_quota: bool = False
    submit_per_min: float = 300
    submit_per_sec: float = 5
    submit_burst_10s: float = 50
    query_per_min: float = 3000
    query_per_sec: float = 50
    query_burst_10s: float = 500
    not_found_grace_seconds: float = 0.0
    language: str = "en"
    faults: list[Any] | None = None
    status_latency_seconds: float = 0.0
    status_workers: int = 0
    proxy_only: bool = False

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if not 0 <= self.queued_seconds <= self.total_seconds:
            raise ValueError("need 0 <= queued_seconds <= total_seconds")
        if self.ttl_seconds < 0 or self.not_found_grace_seconds < 0 or self.initial_credits < 0:
            raise ValueError("ttl_seconds, not_found_grace_seconds and initial_credits must be >= 0")
        if self.status_latency_seconds < 0 or self.status_workers < 0:
            raise ValueError("status_latency_seconds and status_workers must be >= 0")
        if self.language not in ("en", "zh"):
            raise ValueError("language must be 'en' or 'zh'")
        rates = [
            getattr(self, f"{kind}_{limit}")
            for kind in ("submit", "query")
            for limit in ("per_min", "per_sec", "burst_10s")
        ]
        if min(rates) <= 0:
            raise ValueError("quota limits must be > 0")
        if self.api_keys is not None:
            self.api_keys = frozenset(self.api_keys)
        parse_durations(self.durations)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SimulatorConfig:
        """A config from a named preset (``test`` = 1 s / 5 s, ``realistic`` = 10 s / 90 s).

        :param name: a key of :data:`PRESETS`.
        :param overrides: fields to change on top of the preset.
        """
        return cls(**{**PRESETS[name], **overrides})

    def updated(self, **changes: Any) -> SimulatorConfig:
        """A validated copy with ``changes`` applied (``preset`` names a preset to start from).

        :raises ValueError: on unknown names, on ``faults`` (queue those instead) and on bad values.
        """
        if "preset" in changes:
            name = changes.pop("preset")
            if name not in PRESETS:
                raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
            changes = {**PRESETS[name], **changes}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)} | ({"faults"} & set(changes))
        if unknown:
            raise ValueError(f"cannot set config fields: {', '.join(sorted(unknown))} (queue faults with add_fault)")
        return dataclasses.replace(self, **changes)

    def allowed_durations(self) -> frozenset[int]:
        """The accepted durations as a set."""
        return parse_durations(self.durations)

    def public(self) -> dict[str, Any]:
        """The config as JSON, without the accepted keys themselves."""
        data = dataclasses.asdict(self)
        data["api_keys"] = None if self.api_keys is None else len(self.api_keys)
        data.pop("faults")
        return data
