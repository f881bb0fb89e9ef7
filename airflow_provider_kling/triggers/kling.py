"""KlingVideoTrigger: waits for a generation on the triggerer, holding no worker slot."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.startup import staggered_start
from airflow_provider_kling.wait import DEFAULT_TIMEOUT, WaitState, await_event


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
            async with KlingHook(self.kling_conn_id) as hook:
                event = await await_event(hook, state, self.poll_interval)
        except Exception as err:  # whatever happens inside, exactly one event
            event = state.error_event(err)
        yield TriggerEvent(event)
