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

A reservation is a place in line, not a time: the line drains at the pace of the moment, so when the
pace drops every place already taken comes later, and when it grows back they all come sooner (a
backlog reserved at a low pace drains at the recovered one, in order). Reservations are computed
under a lock held for microseconds and return how long to sleep before checking again; the caller
sleeps (``time.sleep`` in a worker, ``asyncio.sleep`` on an event loop), so this module never
blocks a loop.
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
    """A reserved place in line: sleep ``delay`` seconds, then :meth:`RequestBudget.recheck`.

    ``delay`` is 0 when the request may be sent now. ``place`` is the slot's place in the budget's line
    (see :class:`RequestBudget`); ``generation`` the budget's :attr:`~RequestBudget.generation` when it
    was last checked.
    """

    delay: float
    generation: int
    place: float = 0.0


class RequestBudget:
    """A cell-rate (token bucket) limiter with a shared pause and an adaptive (AIMD) pace.

    The budget is a line of places drained by a clock that counts sent requests: it advances at the
    pace of the moment (requests a second), stands still during a pause, and a place comes due when
    the clock reaches it. A change of pace or a pause so moves every place already taken, in order.

    :param per_minute: the ceiling: sustained requests a minute when no 429 is seen.
    :param burst_seconds: how many seconds' worth of requests may be sent at once.
    """

    def __init__(self, per_minute: float = DEFAULT_REQUESTS_PER_MINUTE, burst_seconds: float = DEFAULT_BURST_SECONDS):
        self._lock = threading.Lock()
        self._clock = 0.0  # the line's clock at ``_clock_at`` (places)
        self._clock_at: float | None = None  # from when it advances (a pause's end while paused)
        self._next = 0.0  # the next free place
        self._paused_until = 0.0
        self._hold_until = 0.0
        self._decreased_at = -math.inf
        self._decreased_to = math.inf
        self._pace = math.inf
        #: Bumped by every decrease: a 429 to a request sent on an earlier generation does not decrease.
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
            self._set_pace(min(self._pace, self.per_minute), time.monotonic())

    def _advance(self, now: float) -> None:
        """Bring the clock to ``now`` at the current pace (called under the lock)."""
        if self._clock_at is None:
            self._clock_at = now
        elif now > self._clock_at:
            self._clock += self._rate * (now - self._clock_at)
            self._clock_at = now

    def _set_pace(self, per_minute: float, now: float) -> None:
        if self._clock_at is not None:
            self._advance(now)  # the time so far counts at the old pace
        self._pace = per_minute
        self._rate = per_minute * SAFETY_FACTOR / 60.0
        self._tolerance = max(1.0, self._burst * self._rate)  # places that may be sent at once
        # Growth of the rate a second while below the ceiling (places/s²), for early wake-ups.
        self._growth = (
            0.0 if per_minute >= self.per_minute else self.per_minute * SAFETY_FACTOR * INCREASE_PER_SECOND / 60.0
        )

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
            self._set_pace(grown, now)

    def pace(self, now: float | None = None) -> float:
        """The current pace, requests a minute (the ceiling unless 429s lowered it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._update_pace(now)
            return self._pace

    def _slot(self, place: float, now: float, max_wait: float) -> Slot | None:
        """When ``place`` comes due at the current pace, as a slot (called under the lock)."""
        self._advance(now)
        assert self._clock_at is not None
        ahead = place - self._clock  # places still to drain before this one
        start = max(0.0, self._clock_at - now)  # a pause still running
        if ahead <= 1e-9 and start <= 0.0:
            return Slot(0.0, self.generation, place)
        due = start + max(0.0, ahead) / self._rate
        if due > max_wait:
            return None
        if self._growth and ahead > 0:
            # The pace may grow back while we sleep: wake by the earliest moment the place could come
            # due (the rate rising as fast as it may from the end of any pause), then look again.
            rate = self._rate + self._growth * start
            due = min(due, start + (math.sqrt(rate * rate + 2 * self._growth * ahead) - rate) / self._growth)
        return Slot(max(due, 1e-6), self.generation, place)

    def reserve(self, now: float | None = None, max_wait: float = math.inf) -> Slot | None:
        """Take the next place in line: the seconds to sleep before sending or checking again (0 when
        free) and its generation.

        :param max_wait: the longest wait the caller can afford (its deadline); when the place comes
            due later at the current pace, no place is taken and ``None`` is returned.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self._update_pace(now)
            self._advance(now)
            nxt = max(self._next, self._clock) + 1.0
            slot = self._slot(nxt - self._tolerance, now, max_wait)
            if slot is not None:
                self._next = nxt
            return slot

    def recheck(self, slot: Slot, now: float | None = None, max_wait: float = math.inf) -> Slot | None:
        """After sleeping a slot's delay: a zero delay to send now, or the time left until its place
        comes due at the pace of the moment (later after a pause or a decrease, sooner when the pace
        grew back); ``None`` when that comes after ``max_wait`` (the place is given up)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._update_pace(now)
            return self._slot(slot.place, now, max_wait)

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
            self._advance(now)
            # The clock stands still until the pause ends: every place in line comes after it.
            self._clock_at = max(self._clock_at or now, until)

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
                self._set_pace(self._decreased_to, now)  # every place in line drains at the new pace
                self.decreases += 1
                self.generation += 1
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
