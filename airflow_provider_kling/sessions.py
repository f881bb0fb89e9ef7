"""One aiohttp session per event loop, shared by every trigger on that loop.

The first borrower opens the session, the last one out closes it, so thousands of waiting
triggers reuse a few keep-alive connections and tests or ``dag.test()`` (a new loop per
deferral) leave nothing open. Sessions are keyed by the loop object (weakly), never by
``id(loop)``, and a session is never used on another loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

#: At most this many connections per loop; requests beyond it queue for a free connection.
CONNECTION_LIMIT = 64
KEEPALIVE_SECONDS = 30.0


@dataclass
class _Shared:
    session: aiohttp.ClientSession
    borrowers: int = 0


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()


def _open() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)


@asynccontextmanager
async def borrow_session() -> AsyncIterator[aiohttp.ClientSession]:
    """Borrow the running loop's shared session for the duration of the ``async with``."""
    loop = asyncio.get_running_loop()
    shared = _by_loop.get(loop)
    if shared is None or shared.session.closed:
        shared = _by_loop[loop] = _Shared(_open())
    shared.borrowers += 1
    try:
        yield shared.session
    finally:
        shared.borrowers -= 1
        if shared.borrowers == 0 and _by_loop.get(loop) is shared:
            del _by_loop[loop]
            await shared.session.close()


def session_stats() -> dict[str, int]:
    """Open shared sessions and their borrowers, over every live loop (for tests and benchmarks)."""
    items = list(_by_loop.values())
    return {"sessions": len(items), "borrowers": sum(s.borrowers for s in items)}
