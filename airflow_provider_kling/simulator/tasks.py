"""One generation task, whose status is a pure function of time, and the prompt markers."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from .validation import message

_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in ULIDs
_MARKER = re.compile(r"\[sim:([a-z_0-9]+)(?:=(\d+(?:\.\d+)?))?\]")
#: outcome -> (error code, message key) of a task that ends ``failed``.
FAILURES = {
    "content_policy": ("content_policy_violation", "content_policy"),
    "policy_message": ("generation_failed", "policy_message"),
    "generation_failed": ("generation_failed", "generation_failed"),
}
_LEGACY_STATUS = {"queued": "submitted", "in_progress": "processing", "completed": "SUCCESS", "failed": "FAILURE"}


def parse_markers(prompt: str) -> dict[str, float | None]:
    """The ``[sim:name]`` / ``[sim:name=N]`` markers in a prompt."""
    return {name: (float(value) if value else None) for name, value in _MARKER.findall(prompt)}


@dataclass
class Task:
    """One generation task; its state is a pure function of ``now``."""

    id: str
    key_hash: str
    prompt: str
    mode: str
    duration: int
    audio: bool
    cost: int
    created: float
    queued_s: float
    total_s: float
    ttl_s: float
    business_id: str | None = None
    model: str = "kling-v3"
    outcome: str = "complete"  # complete, never_finish, no_url, or a key of FAILURES
    legacy: bool = False
    visible_from: float = 0.0
    refunded: bool = False

    def phase(self, now: float) -> tuple[str, int]:
        """``(status, progress)`` at ``now`` in the current vocabulary."""
        elapsed = now - self.created
        if elapsed < self.queued_s:
            return "queued", 0
        if self.outcome in FAILURES:
            return "failed", 0
        if elapsed < self.total_s or self.outcome == "never_finish":
            fraction = (elapsed - self.queued_s) / max(self.total_s - self.queued_s, 1e-9)
            return "in_progress", min(99, max(1, 1 + int(99 * fraction)))
        return "completed", 100

    @property
    def completed_at(self) -> int:
        """``created_at`` + total time (whole seconds)."""
        return int(self.created) + round(self.total_s)

    @property
    def expires_at(self) -> int:
        """``completed_at`` + ttl (whole seconds)."""
        return self.completed_at + round(self.ttl_s)

    def video_available(self, now: float) -> bool:
        """Whether the result video can be downloaded at ``now`` (until ``expires_at``, never earlier)."""
        done = self.phase(now)[0] == "completed" and self.outcome != "no_url"
        return done and now < max(self.created + self.total_s + self.ttl_s, self.expires_at)

    def view(self, now: float, base_url: str, language: str, *, create: bool = False) -> dict[str, Any]:
        """The task JSON as the API returns it (API doc §2.7 and §3.1)."""
        status, progress = self.phase(now)
        data: dict[str, Any] = {"id": self.id}
        if self.business_id is not None:
            data["client_business_id"] = self.business_id
        data.update(object="generation.task", model=self.model, status=status, progress=progress)
        data["created_at"] = int(self.created)
        if create:
            data["metadata"] = {}
        url = f"{base_url}/files/videos/{self.id}.mp4"
        if status == "completed":
            data.update(completed_at=self.completed_at, expires_at=self.expires_at)
            items = [] if self.outcome == "no_url" else [{"url": url, "format": "mp4"}]
            data["result"] = {"type": "video", "data": items}
        elif status == "failed":
            code, key = FAILURES[self.outcome]
            data["error"] = {"code": code, "message": message(key, language)}
        if self.legacy:
            data["status"] = _LEGACY_STATUS[status]
            data["progress"] = f"{progress}%"
            if data.pop("result", None) is not None and self.outcome != "no_url":
                data["url"] = url
        return data


def task_cost(mode: str, duration: int, audio: bool) -> int:
    """Simulator-only price: 10 credits/s (std) or 15 (pro), +50 % with audio."""
    cost = duration * (15 if mode == "pro" else 10)
    return cost * 3 // 2 if audio else cost


def new_task_id() -> str:
    """``video_`` + 26 random Crockford base32 characters (ULID-like)."""
    return "video_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def outcome_for(markers: dict[str, float | None], failing_now: bool) -> str:
    """How a new task ends, from its prompt markers (failures first).

    :param markers: the prompt's markers, see :func:`parse_markers`.
    :param failing_now: whether a ``fail_first=N`` marker still has failures to hand out.
    """
    for name in ("content_policy", "policy_message", "generation_failed"):
        if name in markers:
            return name
    if failing_now:
        return "generation_failed"
    for name in ("never_finish", "no_url"):
        if name in markers:
            return name
    return "complete"
