"""A connection lookup that never returns (a secrets backend behind a dead network) never holds a
trigger past its deadline: it ends with its timeout event shortly after, through real Airflow's
lookup chain, in a process of its own (the backend is configured for the whole process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow_provider_kling.triggers.kling import STUCK_AFTER_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_IN = 2.0
SCRIPT = f"""
import asyncio, json, os, time
from airflow_provider_kling.triggers.kling import KlingVideoTrigger

async def main():
    started = time.time()
    trigger = KlingVideoTrigger("video_lookup_hang", end_time=started + {DEADLINE_IN})
    events = [event.payload async for event in trigger.run()]
    return {{"events": events, "took": time.time() - started}}

loop = asyncio.new_event_loop()
print(json.dumps(loop.run_until_complete(main())), flush=True)
os._exit(0)  # the backend's thread is still asleep: do not wait for it
"""


def test_a_connection_lookup_that_never_returns_ends_at_the_deadline():
    env = {
        **os.environ,
        "AIRFLOW__SECRETS__BACKEND": "tests.network.hanging_secrets.HangingSecretsBackend",
        "PYTHONPATH": str(ROOT),
    }
    limit = DEADLINE_IN + STUCK_AFTER_SECONDS + 30  # imports included
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"the trigger was still waiting {limit:.0f} s later: {err.stderr!r}"[-2000:]) from None
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    [event] = result["events"]
    assert event["status"] == "timeout", event
    assert "connection lookup" in event["message"]
    assert result["took"] <= DEADLINE_IN + STUCK_AFTER_SECONDS + 2, result["took"]
