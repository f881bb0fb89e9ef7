"""One aiohttp session per event loop, shared by every trigger on that loop.

The first borrower opens the session, the last one out closes it, so thousands of waiting
triggers reuse a few keep-alive connections and tests or ``dag.test()`` (a new loop per
deferral) leave nothing open. Sessions are keyed by the loop object (weakly), never by
``id(loop)``, and a session is never used on another loop.

Beside the session, the loop's :class:`Permits` (as many as the pool's connections): a caller
takes a permit *before* its request budget slot and sends at once on a free connection. Were the
slot taken first, requests that passed the budget while the server was slow would queue for a
connection and leave together when it caught up, at the server's speed rather than the budget's.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

#: At most this many connections per loop; requests beyond it queue for a free connection.
CONNECTION_LIMIT = 64
KEEPALIVE_SECONDS = 30.0
#: The fewest requests a loop keeps on the wire however slowly the server answers (see :class:`Permits`).
MIN_CONCURRENCY = 4
#: Requests estimated to wait at the server: above ``QUEUE_HIGH`` the loop sends fewer at once, below
#: ``QUEUE_LOW`` (when the limit holds requests back) more.
QUEUE_LOW = 3.0
QUEUE_HIGH = 6.0
#: The no-load round trip is the fastest answer within the last one to two windows of this length.
FASTEST_WINDOW_SECONDS = 5.0


class Permits:
    """At most :attr:`limit` requests of one loop on the wire at once; waiters are served in order.

    A lighter :class:`asyncio.Semaphore` whose wait ends at a deadline without a task per waiter, and
    whose limit adapts to the server the way TCP Vegas adapts a window: from each answer's round trip
    and the fastest one seen lately (the no-load round trip), ``in flight x (1 - no-load / round
    trip)`` estimates how many requests were waiting at the server (or behind other answers in this
    loop) rather than being served. Above :data:`QUEUE_HIGH` the limit shrinks by one, never below
    ``minimum``; below :data:`QUEUE_LOW`, when the limit is what holds requests back, it grows by one,
    never above ``maximum``. Requests that would only queue add no throughput, but every one keeps its
    objects alive long enough to reach the collector's oldest generation: with 5,000 waits on a fast
    server (about 50 polls waking together) the full pool made the process's full collections run
    four times as often (13 against 3 in one run).

    :param maximum: the most permits (the pool's connections); also the starting limit.
    :param minimum: the fewest permits the limit shrinks to.
    """

    def __init__(self, maximum: int, minimum: int = MIN_CONCURRENCY) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.limit = maximum
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._fastest = (math.inf, math.inf)  # fastest round trip in the previous and current window
        self._window_ends = -math.inf

    async def acquire(self, deadline: float) -> bool:
        """Take a permit; ``False`` when ``deadline`` (epoch seconds) passes first (none is taken)."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(max(0.0, deadline - time.time()), _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a permit just as the caller was cancelled: pass it on
            raise
        finally:
            expiry.cancel()

    def release(self, round_trip: float | None = None) -> None:
        """Give a permit back (with the request's round trip in seconds when it got an answer) and
        hand permits on to the first waiters still waiting, as far as the limit allows."""
        if round_trip is not None:
            self._adapt(round_trip)
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(True)

    def _adapt(self, round_trip: float) -> None:
        now = time.monotonic()
        if now >= self._window_ends:
            previous = self._fastest[1] if now < self._window_ends + FASTEST_WINDOW_SECONDS else math.inf
            self._fastest = (previous, round_trip)
            self._window_ends = now + FASTEST_WINDOW_SECONDS
        elif round_trip < self._fastest[1]:
            self._fastest = (self._fastest[0], round_trip)
        if round_trip <= 0:
            return
        queued = self.in_flight * (1.0 - min(self._fastest) / round_trip)
        if queued > QUEUE_HIGH:
            self.limit = max(self.minimum, self.limit - 1)
        elif queued < QUEUE_LOW and (self._waiters or self.in_flight >= self.limit):
            self.limit = min(self.maximum, self.limit + 1)

    @property
    def waiting(self) -> int:
        """Callers waiting for a permit (for tests and benchmarks)."""
        return sum(not waiter.done() for waiter in self._waiters)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


@dataclass
class LoopSession:
    """A loop's shared session and its :class:`Permits`."""

    session: aiohttp.ClientSession
    permits: Permits
    borrowers: int = 0


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSession] = weakref.WeakKeyDictionary()


def _open() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)


@asynccontextmanager
async def borrow_session() -> AsyncIterator[LoopSession]:
    """Borrow the running loop's shared session (and permits) for the duration of the ``async with``."""
    loop = asyncio.get_running_loop()
    shared = _by_loop.get(loop)
    if shared is None or shared.session.closed:
        shared = _by_loop[loop] = LoopSession(_open(), Permits(CONNECTION_LIMIT))
    shared.borrowers += 1
    try:
        yield shared
    finally:
        shared.borrowers -= 1
        if shared.borrowers == 0 and _by_loop.get(loop) is shared:
            del _by_loop[loop]
            await shared.session.close()


def session_stats() -> dict[str, int]:
    """Open shared sessions and their borrowers, over every live loop (for tests and benchmarks)."""
    items = list(_by_loop.values())
    return {"sessions": len(items), "borrowers": sum(s.borrowers for s in items)}
