"""One process of the multi-process quota test: trigger waits and a submit burst on one key.

Run as ``python -m tests.reliability.multiprocess_worker SPEC_JSON`` with ``AIRFLOW_CONN_KLING_DEFAULT``
set. It waits until ``start_at`` (so the processes start together), runs ``KlingVideoTrigger.run()``
for every task id on its own event loop while a thread pool submits the ``submits`` business ids
through ``KlingHook.submit_video``, and prints one JSON line: the events, the created task ids and
what its budgets did.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def main(spec: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingVideoRequest
    from airflow_provider_kling.triggers.kling import KlingVideoTrigger

    request = KlingVideoRequest.from_kwargs(prompt="a multi-process burst")
    from airflow_provider_kling.ratelimit import RequestBudget

    # What each budget did, in order (shown when the test fails).
    trace: list[list[Any]] = []
    throttled, pause = RequestBudget.throttled, RequestBudget.pause

    def traced_throttled(self, retry_after, now=None, sent_generation=None):  # type: ignore[no-untyped-def]
        throttled(self, retry_after, now, sent_generation)
        trace.append(
            [
                round(time.time() - spec["start_at"], 3),
                "429",
                self.per_minute,
                retry_after,
                sent_generation,
                self.generation,
                round(self.pace(), 1),
                round(self.paused_for(), 3),
            ]
        )

    def traced_pause(self, seconds, now=None):  # type: ignore[no-untyped-def]
        pause(self, seconds, now)
        trace.append([round(time.time() - spec["start_at"], 3), "pause", self.per_minute, seconds])

    RequestBudget.throttled, RequestBudget.pause = traced_throttled, traced_pause  # type: ignore[method-assign]

    def submit(business_id: str) -> str:
        hook = KlingHook()
        try:
            return hook.submit_video(request, business_id).id
        finally:
            hook.close()

    async def wait(task_id: str) -> list[dict[str, Any]]:
        trigger = KlingVideoTrigger(task_id, poll_interval=spec["poll_interval"], end_time=spec["end_time"])
        return [event.payload async for event in trigger.run()]

    async def waits() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(wait(task_id) for task_id in spec["task_ids"]))

    time.sleep(max(0.0, spec["start_at"] - time.time()))
    with ThreadPoolExecutor(spec["submit_threads"]) as pool:
        created = [pool.submit(submit, business_id) for business_id in spec["submits"]]
        events = asyncio.run(waits())
        created_ids = [future.result() for future in created]
    budgets = KlingHook().settings.budgets
    return {
        "events": events,
        "created": created_ids,
        "query_decreases": budgets.query.decreases,
        "submit_decreases": budgets.submit.decreases,
        "trace": trace[-60:],
        "query_pace": budgets.query.pace(),
        "query_pauses": budgets.query.pauses,
        "submit_pace": budgets.submit.pace(),
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
