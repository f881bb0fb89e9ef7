"""What thousands of triggers starting on one event loop share: a staggered start and one connection lookup.

A triggerer that starts thousands of triggers at once (a restart, a large backfill deferring) used to
run every trigger's start-up in the same loop iteration, each looking the connection up itself (the
async secrets lookup, the extras, the settings and the secret masking): seconds of event-loop lag
at N=5,000. Here:

* **Staggered start.** At most :data:`STARTS_PER_ITERATION` triggers go through their start-up per
  loop iteration; the others wait their turn in arrival order, so the loop keeps serving events,
  polls and heartbeats while they start.
* **One lookup per loop and connection (single flight).** The first trigger looks the connection
  up; every trigger that starts while that lookup runs awaits the same result, and triggers that
  start within :data:`SETTINGS_TTL_SECONDS` of its completion reuse it. A trigger that starts later
  looks up again, so a rotated key or a changed extra is seen by every trigger started after the
  TTL. A failed lookup is never kept: its waiters get its error, the next trigger tries again.

Both are kept per loop object (weakly, like the shared sessions of
``airflow_provider_kling.sessions``) and the TTL runs on the loop's clock, so nothing is shared
between loops or outlives one.
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from airflow_provider_kling.api import ClientSettings

#: Seconds a resolved connection is reused by triggers starting on the same loop.
SETTINGS_TTL_SECONDS = 10.0
#: Trigger start-ups let through per event-loop iteration; the rest wait for the next iterations.
STARTS_PER_ITERATION = 100


@dataclass
class _Entry:
    lookup: asyncio.Task[ClientSettings]
    #: Loop time after which new callers look up again (set when the lookup succeeds).
    expires: float = math.inf


@dataclass
class _LoopState:
    settings: dict[Hashable, _Entry] = field(default_factory=dict)
    #: Start-ups let through in the current iteration, and those waiting for a later one.
    started: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    release_scheduled: bool = False


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()


def _state(loop: asyncio.AbstractEventLoop) -> _LoopState:
    state = _by_loop.get(loop)
    if state is None:
        state = _by_loop[loop] = _LoopState()
    return state


async def staggered_start() -> None:
    """Return at once while fewer than :data:`STARTS_PER_ITERATION` started in this loop iteration,
    else wait (in arrival order) for an iteration with room."""
    loop = asyncio.get_running_loop()
    state = _state(loop)
    if not state.release_scheduled:
        state.release_scheduled = True
        loop.call_soon(_release, state)
    if state.started < STARTS_PER_ITERATION and not state.waiting:
        state.started += 1
        return
    turn: asyncio.Future[None] = loop.create_future()
    state.waiting.append(turn)
    await turn


def _release(state: _LoopState) -> None:
    """Once per iteration while start-ups are pending: let the next batch of waiters through."""
    state.started = 0
    while state.waiting and state.started < STARTS_PER_ITERATION:
        turn = state.waiting.popleft()
        if not turn.done():  # a cancelled waiter gives its turn away
            turn.set_result(None)
            state.started += 1
    if state.waiting or state.started:
        asyncio.get_running_loop().call_soon(_release, state)
    else:
        state.release_scheduled = False


async def shared_settings(key: Hashable, lookup: Callable[[], Awaitable[ClientSettings]]) -> ClientSettings:
    """The settings for ``key`` on the running loop: a fresh shared result without awaiting, else the
    running lookup's result, else a new ``lookup()`` (whose result the callers within the TTL share).

    :param key: what identifies the connection (the hook class and the connection id).
    :param lookup: resolves the settings; runs at most once at a time per loop and key.
    """
    loop = asyncio.get_running_loop()
    entries = _state(loop).settings
    entry = entries.get(key)
    if entry is not None and entry.lookup.done():
        if loop.time() < entry.expires:
            return entry.lookup.result()
        entry = None
    if entry is None:
        entry = entries[key] = _Entry(loop.create_task(_call(lookup)))
        entry.lookup.add_done_callback(functools.partial(_settle, loop, entries, key, entry))
    # Shielded: a cancelled trigger does not cancel the lookup the others are waiting for.
    return await asyncio.shield(entry.lookup)


async def _call(lookup: Callable[[], Awaitable[ClientSettings]]) -> ClientSettings:
    return await lookup()


def _settle(
    loop: asyncio.AbstractEventLoop,
    entries: dict[Hashable, _Entry],
    key: Hashable,
    entry: _Entry,
    task: asyncio.Task[ClientSettings],
) -> None:
    if not task.cancelled() and task.exception() is None:
        entry.expires = loop.time() + SETTINGS_TTL_SECONDS
    elif entries.get(key) is entry:
        del entries[key]
