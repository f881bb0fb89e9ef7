"""KlingVideoTrigger: waits for a generation on the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.events import EventStatus, WaitState, jittered
from airflow_provider_kling.exceptions import KlingError
from airflow_provider_kling.hooks.kling import KlingHook

#: Attempts per poll for connection errors, 5xx and malformed bodies (429/503 wait until the deadline).
POLL_ATTEMPTS = 3


class KlingVideoTrigger(BaseTrigger):
    """Poll a Kling task until it completes, fails or the deadline passes; yield exactly one event.

    Every trigger on the event loop polls through one shared HTTP session; the connection (and so
    the API key) is resolved asynchronously inside :meth:`run` and never stored in the kwargs.

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
        self.end_time = float(end_time) if end_time is not None else time.time() + 900.0
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
        state = WaitState(self.kling_task_id, self.client_business_id, self.end_time)
        try:
            async with KlingHook(self.kling_conn_id) as hook:
                event = await self._wait(hook, state)
        except KlingError as err:  # the connection itself is unusable (no key, bad host)
            event = state.event(EventStatus.ERROR, str(err), getattr(err, "code", None), type(err).__name__)
        yield TriggerEvent(event)

    async def _wait(self, hook: KlingHook, state: WaitState) -> dict[str, Any]:
        policy = RetryPolicy(deadline=self.end_time, transient_attempts=POLL_ATTEMPTS)
        while True:
            remaining = state.remaining()
            if remaining <= 0:
                return state.timeout_event()
            await asyncio.sleep(min(jittered(self.poll_interval), remaining))
            try:
                task = await hook.aget_task(self.kling_task_id, policy=policy, missing_ok=True)
            except KlingError as err:
                event = state.on_error(err)
            else:
                event = state.on_task(task)
            if event is not None:
                return event
