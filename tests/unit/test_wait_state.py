"""WaitState decisions: the 404 grace of a wait whose earlier pokes left no record (reschedule mode
without a task state store, Airflow < 3.3: a 404 counts from the wait's first poke), and a request
budget with no slot before the deadline (a throttle, never a fault)."""

from __future__ import annotations

import time

from airflow_provider_kling.api import slot_wait
from airflow_provider_kling.models import KlingTask
from airflow_provider_kling.ratelimit import RequestBudget
from airflow_provider_kling.wait import EventStatus, WaitState

FIRST_POKE = 1_000.0


def state() -> WaitState:
    return WaitState("video_x", None, end_time=FIRST_POKE + 900, not_found_grace=60)


def test_a_404_without_an_earlier_record_counts_from_now():
    assert state().on_task(None, now=FIRST_POKE + 61) is None


def test_a_404_on_a_later_poke_counts_from_the_first_poke():
    wait = state()
    wait.assumed_missing_since = FIRST_POKE
    event = wait.on_task(None, now=FIRST_POKE + 61)
    assert event is not None and event["status"] == EventStatus.ERROR.value and event["error_code"] == "task_not_found"


def test_a_seen_task_drops_the_assumption():
    wait = state()
    wait.assumed_missing_since = FIRST_POKE
    running = KlingTask.from_api({"id": "video_x", "status": "processing", "progress": 10})
    assert wait.on_task(running, now=FIRST_POKE + 30) is None
    assert wait.on_task(None, now=FIRST_POKE + 61) is None  # counted from this 404, not the first poke
    assert wait.on_task(None, now=FIRST_POKE + 122)["error_code"] == "task_not_found"


def test_a_budget_without_a_slot_before_the_deadline_is_waited_out_not_counted_as_errors():
    """A budget slowed by 429s (or paused by another caller's Retry-After) past the wait's end used
    to count as a transient fault: ten polls later the wait ended in ``error`` long before its
    deadline, for a generation that was running fine."""
    budget = RequestBudget(per_minute=3000)
    budget.pause(600.0)
    wait = WaitState("video_x", None, end_time=time.time() + 60)
    for _ in range(50):
        try:
            slot_wait(budget, wait.end_time, "status")
        except Exception as err:
            assert wait.on_error(err) is None
    timeout = wait.timeout_event()
    assert timeout["status"] == EventStatus.TIMEOUT.value and "while rate limited" in timeout["message"]
