"""The pattern the official providers use, for the side-by-side benchmark: a new session per poll.

A minimal, faithful copy of ``HttpSensorTrigger.run`` of apache-airflow-providers-http
(``providers/http/src/airflow/providers/http/triggers/http.py`` in apache/airflow): the hook
resolves its connection once (``HttpAsyncHook.config()`` caches it per hook), and every poll opens
a new ``aiohttp.ClientSession``, sends one request through it and closes it, then sleeps the poke
interval (no jitter). Only what the Kling status endpoint needs differs: the status body is parsed
and the wait ends on ``completed``/``failed`` instead of on a non-404 answer. No retries, no budget,
no deadline handling: the peer gets every advantage of doing less.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

TERMINAL = {"completed": "success", "failed": "failed"}


class PeerSessionPerPollTrigger(BaseTrigger):
    """Poll ``GET /v1/videos/generations/{id}`` with a new ``aiohttp.ClientSession`` per poll.

    :param kling_task_id: the task to wait for.
    :param poke_interval: seconds between polls (``HttpSensorTrigger``'s ``poke_interval``).
    :param http_conn_id: the connection (host and API key).
    """

    def __init__(self, kling_task_id: str, poke_interval: float = 10.0, http_conn_id: str = "kling_default"):
        super().__init__()
        self.kling_task_id = kling_task_id
        self.poke_interval = poke_interval
        self.http_conn_id = http_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kling_task_id": self.kling_task_id,
                "poke_interval": self.poke_interval,
                "http_conn_id": self.http_conn_id,
            },
        )

    async def _config(self) -> tuple[str, dict[str, str]]:
        # HttpAsyncHook.config(): get_async_connection once per hook, base URL and auth from it.
        from airflow.providers.common.compat.connection import get_async_connection

        conn = await get_async_connection(conn_id=self.http_conn_id)
        return conn.host.rstrip("/"), {"Authorization": f"Bearer {conn.password}"}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        base, headers = await self._config()
        url = f"{base}/v1/videos/generations/{self.kling_task_id}"
        while True:
            # HttpSensorTrigger.run: `async with aiohttp.ClientSession() as session: await hook.run(...)`.
            async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
                body = json.loads(await response.read())
            status = TERMINAL.get(body.get("status"))
            if status is not None:
                yield TriggerEvent({"status": status, "kling_task_id": self.kling_task_id, "task": body})
                return
            await asyncio.sleep(self.poke_interval)
