"""A secrets backend that never answers (a vault behind a dead network), for the lookup-hang test.

Configured with ``AIRFLOW__SECRETS__BACKEND=tests.network.hanging_secrets.HangingSecretsBackend`` in
a process of its own: Airflow asks it before the environment, so every connection lookup hangs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.secrets.base_secrets import BaseSecretsBackend


class HangingSecretsBackend(BaseSecretsBackend):
    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        time.sleep(3600)
        return None

    def get_connection(self, conn_id: str, team_name: str | None = None) -> Any:
        time.sleep(3600)
        return None

    async def aget_connection(self, conn_id: str, team_name: str | None = None) -> Any:
        await asyncio.sleep(3600)
        return None
