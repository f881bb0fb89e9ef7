"""KlingVideoTrigger: waits for a generation on the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.startup import staggered_start
from airflow_provider_kling.wait import DEFAULT_TIMEOUT, WaitState, await_event

#: The wait ends by itself at its deadline (every call is bounded by it); what has not returned this
#: long after it (a connection lookup whose secrets backend never answers) is stopped.
STUCK_AFTER_SECONDS = 5.0


class KlingVideoTrigger(BaseTrigger):
    """Poll a Kling task until it completes, fails or the deadline passes; yield exactly one event.

    Every trigger on the event loop polls through one shared HTTP session; the connection (and so
    the API key) is resolved asynchronously inside :meth:`run`, once for all the triggers starting
    on the loop within seconds, and never stored in the kwargs. Triggers starting together start a
    bounded number per loop iteration (:mod:`airflow_provider_kling.startup`). The
    wait itself is :func:`airflow_provider_kling.wait.await_event`; any exception becomes the one
    ``error`` event.

    :param kling_task_id: the Kling task id (or ``client_business_id``) to wait for.
    :param kling_conn_id: the Airflow connection id.
    :param poll_interval: seconds between polls (jittered by +/-5 %).
    :param end_time: absolute deadline, epoch seconds; a restarted trigger keeps it.
    :param client_business_id: the idempotency id, carried into the result.
    """

    def __init__(
        self,
        kling_task_id: str,
        kling_conn_id: str = KlingHook.default_conn_name,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        client_business_id: str | None = None,
    ) -> None:
        super().__init__()
        self.kling_task_id = kling_task_id
        self.kling_conn_id = kling_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + DEFAULT_TIMEOUT
        self.client_business_id = client_business_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kling_task_id": self.kling_task_id,
                "kling_conn_id": self.kling_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "client_business_id": self.client_business_id,
            },
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kling_task_id={self.kling_task_id!r} end_time={self.end_time}>"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Thousands of triggers starting at once start a bounded number per loop iteration.
        await staggered_start()
        state = WaitState(self.kling_task_id, self.client_business_id, self.end_time)
        try:
            event = await _within(self._wait(state), max(0.0, state.remaining()) + STUCK_AFTER_SECONDS)
        except Exception as err:  # whatever happens inside, exactly one event
            event = state.error_event(err)
        if event is None:
            event = state.timeout_event(" (stopped after the deadline: the connection lookup or a call did not return)")
        yield TriggerEvent(event)

    async def _wait(self, state: WaitState) -> dict[str, Any]:
        async with KlingHook(self.kling_conn_id) as hook:
            return await await_event(hook, state, self.poll_interval)


async def _within(wait: Coroutine[Any, Any, dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """The wait's event, or ``None`` when it has not returned within ``seconds`` (it is cancelled).

    On Python 3.11+ this adds no task (``asyncio.timeout``); 3.10's ``wait_for`` runs the wait in a
    task of its own (about 2 KB more per waiting trigger).
    """
    if sys.version_info < (3, 11):
        try:
            return await asyncio.wait_for(wait, seconds)
        except asyncio.TimeoutError:
            return None
    try:
        async with asyncio.timeout(seconds) as bound:
            return await wait
    except TimeoutError:
        if bound.expired():
            return None
        raise
