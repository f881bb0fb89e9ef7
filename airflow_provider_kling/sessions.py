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


class Permits:
    """At most ``limit`` requests of one loop on the wire at once; waiters are served in order.

    A lighter :class:`asyncio.Semaphore` whose wait ends at a deadline without a task per waiter.

    :param limit: the number of permits.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[bool]] = deque()

    async def acquire(self, deadline: float) -> bool:
        """Take a permit; ``False`` when ``deadline`` (epoch seconds) passes first (none is taken)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
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

    def release(self) -> None:
        """Give a permit back: to the first waiter still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1

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
