"""Client-side request budgets: one for submits and one for queries, per API key and host.

The API limits requests per user in two independent token buckets: submits (``POST`` of a
generation) and queries (status, balance, upload), the submit bucket ten times smaller. Every
caller on one key in a process (submits, sensors, thousands of triggers on one event loop) reserves
its slot in the budget of its call's bucket first, so the process stays under its share and a
``Retry-After`` seen by one caller pauses every caller of that bucket.

Several processes on one key (workers, HA triggerers) have no coordinator: each budget adapts its
own pace by additive increase / multiplicative decrease. A 429 halves the pace (never below
``MIN_PER_MINUTE``) besides the ``Retry-After`` pause; after ``QUIET_SECONDS`` without a
429 the pace grows back linearly (``INCREASE_PER_SECOND`` of the ceiling a second) to the
configured ceiling. Processes sharing a quota so settle around it, the way TCP flows share a link.

Reservations are computed under a lock held for microseconds and return how long to wait; the
caller sleeps (``time.sleep`` in a worker, ``asyncio.sleep`` on an event loop), so this module
never blocks a loop.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping
from typing import NamedTuple

#: The two buckets of the API (a call's :attr:`~airflow_provider_kling.api.Call.bucket`).
SUBMIT = "submit"
QUERY = "query"
#: The documented quotas per group: (submits, queries) a minute.
GROUP_LIMITS: dict[str, tuple[float, float]] = {
    "default": (300.0, 3000.0),
    "vip": (1000.0, 10000.0),
    "svip": (2000.0, 30000.0),
}
DEFAULT_GROUP = "default"
#: ``X-RateLimit-Category`` of a 429 → the bucket it limits.
CATEGORY_BUCKETS = {"async_submit": SUBMIT, "async_query": QUERY}
#: The documented query quota of the ``default`` group: 3,000 a minute and 50 a second.
DEFAULT_REQUESTS_PER_MINUTE = GROUP_LIMITS[DEFAULT_GROUP][1]
DEFAULT_SUBMITS_PER_MINUTE = GROUP_LIMITS[DEFAULT_GROUP][0]
#: No bursts to speak of: the server's per-second bucket is never overrun, whatever its phase.
DEFAULT_BURST_SECONDS = 0.02
#: Pace a little under the configured rate, so clock skew against the server's buckets never tips over.
SAFETY_FACTOR = 0.95
#: A 429 multiplies the pace by this.
DECREASE_FACTOR = 0.5
#: The pace never drops below this many requests a minute.
MIN_PER_MINUTE = 1.0
#: Seconds without a 429 before the pace starts growing back.
QUIET_SECONDS = 5.0
#: Growth of the pace per quiet second, as a fraction of the ceiling (half to full in 30 s).
INCREASE_PER_SECOND = 1.0 / 60.0
#: After a decrease, further 429s within this many seconds (or the ``Retry-After``, if longer) do not
#: decrease again; nor does a 429 to a request whose slot was taken before the last decrease (its
#: answer can arrive much later than the hold on a loaded machine).
DECREASE_HOLD_SECONDS = 1.0


class Slot(NamedTuple):
    """A reserved send time: sleep ``delay`` seconds, then :meth:`RequestBudget.recheck`."""

    delay: float
    generation: int


class RequestBudget:
    """A cell-rate (token bucket) limiter with a shared pause and an adaptive (AIMD) pace.

    :param per_minute: the ceiling: sustained requests a minute when no 429 is seen.
    :param burst_seconds: how many seconds' worth of requests may be sent at once.
    """

    def __init__(self, per_minute: float = DEFAULT_REQUESTS_PER_MINUTE, burst_seconds: float = DEFAULT_BURST_SECONDS):
        self._lock = threading.Lock()
        self._tat = 0.0
        self._paused_until = 0.0
        self._hold_until = 0.0
        self._decreased_at = -math.inf
        self._decreased_to = math.inf
        self._pace = math.inf
        #: Bumped by every decrease: slots reserved before it are taken again at the new pace.
        self.generation = 0
        self.pauses = 0
        self.decreases = 0
        self.configure(per_minute, burst_seconds)

    def configure(self, per_minute: float, burst_seconds: float = DEFAULT_BURST_SECONDS) -> None:
        """Change the ceiling (the latest connection settings win); a lowered pace stays lowered."""
        with self._lock:
            self.per_minute = float(per_minute)
            self._burst = burst_seconds
            self._decreased_to = min(self._decreased_to, self.per_minute)
            self._set_pace(min(self._pace, self.per_minute))

    def _set_pace(self, per_minute: float) -> None:
        self._pace = per_minute
        self._interval = 60.0 / (per_minute * SAFETY_FACTOR)
        self._tolerance = max(self._interval, self._burst)

    def _update_pace(self, now: float) -> None:
        """Grow a decreased pace back toward the ceiling (called under the lock)."""
        if self._pace >= self.per_minute:
            return
        grown = self._decreased_to + self.per_minute * INCREASE_PER_SECOND * max(
            0.0, now - self._decreased_at - QUIET_SECONDS
        )
        if grown >= self.per_minute:
            self._decreased_to = self.per_minute
            grown = self.per_minute
        if grown != self._pace:
            self._set_pace(grown)

    def pace(self, now: float | None = None) -> float:
        """The current pace, requests a minute (the ceiling unless 429s lowered it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._update_pace(now)
            return self._pace

    def reserve(self, now: float | None = None, max_wait: float = math.inf) -> Slot | None:
        """Take the next slot: the seconds to wait before sending (0 when free) and its generation.

        :param max_wait: the longest wait the caller can afford (its deadline); when the slot comes
            later, no slot is taken and ``None`` is returned.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self._update_pace(now)
            start = max(now, self._paused_until)
            tat = max(self._tat, start)
            allowed_at = max(start, tat - self._tolerance + self._interval)
            delay = allowed_at - now
            if delay > max_wait:
                return None
            self._tat = tat + self._interval
            return Slot(delay if delay > 1e-6 else 0.0, self.generation)

    def recheck(self, slot: Slot, now: float | None = None, max_wait: float = math.inf) -> Slot | None:
        """After sleeping a slot's delay: a zero delay to send now, or a fresh slot when a pause
        began meanwhile (a ``Retry-After`` seen by another caller holds this one too) or a 429
        lowered the pace since the slot was taken; ``None`` when that slot comes after ``max_wait``."""
        if slot.generation != self.generation or self.paused_for(now) > 0:
            return self.reserve(now, max_wait)
        return Slot(0.0, slot.generation)

    def pause(self, seconds: float, now: float | None = None) -> None:
        """Hold every caller of this budget for ``seconds`` (a ``Retry-After`` from the server)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._pause(seconds, now)

    def _pause(self, seconds: float, now: float) -> None:
        until = now + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1
        # Reservations made before the pause restart after it, paced again.
        self._tat = max(self._tat, until)

    def throttled(
        self, retry_after: float | None, now: float | None = None, sent_generation: int | None = None
    ) -> None:
        """A 429: halve the pace (once per throttling episode) and pause for ``retry_after``.

        429s answered within ``DECREASE_HOLD_SECONDS`` (or the pause, if longer) of a decrease, and
        429s to requests sent on a slot of an earlier generation, answer requests sent before the
        decrease, so they pause but do not decrease again.

        :param sent_generation: the ``Slot.generation`` the limited request was sent on, if known.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            current = sent_generation is None or sent_generation == self.generation
            if current and now >= self._hold_until:
                self._update_pace(now)
                self._decreased_to = max(MIN_PER_MINUTE, min(self._pace * DECREASE_FACTOR, self.per_minute))
                self._decreased_at = now
                self._set_pace(self._decreased_to)
                self.decreases += 1
                self.generation += 1
                self._tat = now  # every slot is taken again, at the new pace
            if current:
                self._hold_until = max(self._hold_until, now + max(DECREASE_HOLD_SECONDS, retry_after or 0.0))
            if retry_after is not None:
                self._pause(retry_after, now)

    def paused_for(self, now: float | None = None) -> float:
        """Seconds left in the current pause."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return max(0.0, self._paused_until - now)


class KeyBudgets(NamedTuple):
    """The submit and query budgets of one key on one API host."""

    submit: RequestBudget
    query: RequestBudget

    def bucket(self, name: str) -> RequestBudget:
        """The budget of bucket ``name`` (``SUBMIT`` or ``QUERY``)."""
        return self.submit if name == SUBMIT else self.query

    def limited(self, call_bucket: str, headers: Mapping[str, str]) -> RequestBudget:
        """The budget a 429 limits: its ``X-RateLimit-Category`` when it names one, else the call's."""
        category = (headers.get("X-RateLimit-Category") or "").strip().lower()
        return self.bucket(CATEGORY_BUCKETS.get(category, call_bucket))


_budgets: dict[str, KeyBudgets] = {}
_budgets_lock = threading.Lock()


def budgets_for(base_url: str, api_key: str, submits_per_minute: float, queries_per_minute: float) -> KeyBudgets:
    """The process-wide budgets of one key on one API host (keyed by a hash, never the key)."""
    digest = hashlib.sha256(f"{base_url}\x1f{api_key}".encode()).hexdigest()
    with _budgets_lock:
        budgets = _budgets.get(digest)
        if budgets is None:
            budgets = _budgets[digest] = KeyBudgets(
                RequestBudget(submits_per_minute), RequestBudget(queries_per_minute)
            )
        else:
            for budget, per_minute in ((budgets.submit, submits_per_minute), (budgets.query, queries_per_minute)):
                if budget.per_minute != per_minute:
                    budget.configure(per_minute)
        return budgets


def reset_budgets() -> None:
    """Forget every budget (tests)."""
    with _budgets_lock:
        _budgets.clear()
