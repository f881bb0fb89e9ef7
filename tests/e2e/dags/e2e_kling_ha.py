"""The DAG of the HA-triggerer end-to-end test: many deferred generations on one key."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator

DAG_ID = "e2e_kling_ha_triggerers"
#: Mapped generations, each deferred on the triggerers for about GENERATION_SECONDS.
GENERATIONS = 40
GENERATION_SECONDS = 40
PROMPTS = [f"ha generation {i:02d} [sim:total={GENERATION_SECONDS}]" for i in range(GENERATIONS)]

with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as ha_triggerers:
    # No retries: every mapped task instance must succeed in its first try (a retry would hide a lost trigger).
    KlingGenerateVideoOperator.partial(
        task_id="generate", poll_interval=1, timeout=150, deferrable=True, retries=0
    ).expand(prompt=PROMPTS)
