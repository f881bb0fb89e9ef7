"""Client-side request budget, shared by everything in a process that uses the same API key.

The API limits requests per user in token buckets. Every caller on one key (submits, sensors,
thousands of triggers on one event loop) reserves its slot here first, so the process as a whole
stays under ``max_requests_per_minute`` and a ``Retry-After`` seen by one caller pauses them all.

Reservations are computed under a lock held for microseconds and return how long to wait; the
caller sleeps (``time.sleep`` in a worker, ``asyncio.sleep`` on an event loop), so this module
never blocks a loop.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

#: The documented query quota of the ``default`` group: 3,000 a minute and 50 a second.
DEFAULT_REQUESTS_PER_MINUTE = 3000.0
#: No bursts to speak of: the server's per-second bucket is never overrun, whatever its phase.
DEFAULT_BURST_SECONDS = 0.02
#: Pace a little under the configured rate, so clock skew against the server's buckets never tips over.
SAFETY_FACTOR = 0.95


class RequestBudget:
    """A generic cell-rate (token bucket) limiter with a shared pause.

    :param per_minute: sustained requests a minute.
    :param burst_seconds: how many seconds' worth of requests may be sent at once.
    """

    def __init__(self, per_minute: float = DEFAULT_REQUESTS_PER_MINUTE, burst_seconds: float = DEFAULT_BURST_SECONDS):
        self._lock = threading.Lock()
        self._tat = 0.0
        self._paused_until = 0.0
        self.pauses = 0
        self.configure(per_minute, burst_seconds)

    def configure(self, per_minute: float, burst_seconds: float = DEFAULT_BURST_SECONDS) -> None:
        """Change the rate (the latest connection settings win)."""
        with self._lock:
            self.per_minute = float(per_minute)
            self._interval = 60.0 / (self.per_minute * SAFETY_FACTOR)
            self._tolerance = max(self._interval, burst_seconds)

    def reserve(self, now: float | None = None, max_wait: float = math.inf) -> float | None:
        """Take the next slot; return the seconds to wait before sending (0 when free).

        :param max_wait: the longest wait the caller can afford (its deadline); when the slot comes
            later, no slot is taken and ``None`` is returned.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            start = max(now, self._paused_until)
            tat = max(self._tat, start)
            allowed_at = max(start, tat - self._tolerance + self._interval)
            delay = allowed_at - now
            if delay > max_wait:
                return None
            self._tat = tat + self._interval
            return delay if delay > 1e-6 else 0.0

    def recheck(self, now: float | None = None, max_wait: float = math.inf) -> float | None:
        """After sleeping a reserved delay: 0 to send now, or the wait for a fresh slot when a pause
        began meanwhile (a ``Retry-After`` seen by another caller holds this one too); ``None``
        when that slot comes after ``max_wait``."""
        return self.reserve(now, max_wait) if self.paused_for(now) > 0 else 0.0

    def pause(self, seconds: float, now: float | None = None) -> None:
        """Hold every caller on this key for ``seconds`` (a ``Retry-After`` from the server)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            until = now + max(0.0, seconds)
            if until > self._paused_until:
                self._paused_until = until
                self.pauses += 1
            # Reservations made before the pause restart after it, paced again.
            self._tat = max(self._tat, until)

    def paused_for(self, now: float | None = None) -> float:
        """Seconds left in the current pause."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return max(0.0, self._paused_until - now)


_budgets: dict[str, RequestBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(base_url: str, api_key: str, per_minute: float) -> RequestBudget:
    """The process-wide budget of one key on one API host (keyed by a hash, never the key)."""
    digest = hashlib.sha256(f"{base_url}\x1f{api_key}".encode()).hexdigest()
    with _budgets_lock:
        budget = _budgets.get(digest)
        if budget is None:
            budget = _budgets[digest] = RequestBudget(per_minute)
        elif budget.per_minute != per_minute:
            budget.configure(per_minute)
        return budget


def reset_budgets() -> None:
    """Forget every budget (tests)."""
    with _budgets_lock:
        _budgets.clear()
