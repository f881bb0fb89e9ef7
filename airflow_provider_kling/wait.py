"""The one owner of the wait: poll policy, poll step, the decision after each poll, the event.

Who calls what::

    KlingVideoTrigger.run ──► await_event(hook, state, interval) ──► apoll(hook, state)  ─┐
    wait_blocking(hook, state, interval)  (generate, deferrable=False) ──► poll(...)       ├─► WaitState
    KlingVideoSensor.execute (pre-check before deferring) ──► poll(...)                    │   .on_task / .on_error
    KlingVideoSensor.poke (poke and reschedule modes)   ──► poll(...)                     ─┘
    execute_complete of the sensor and the generate operator ──► result_from_event(event)

Every poll is one HTTP attempt (:func:`poll_policy`: no tenacity inside a poll, bounded by the wait's deadline); :class:`WaitState`
alone decides what happens next: 429/503 wait ``max(interval, Retry-After)`` within the deadline,
transient errors (5xx, connection errors, malformed bodies) are counted and end the wait after
:data:`MAX_CONSECUTIVE_ERRORS` in a row, a 404 is tolerated for :data:`NOT_FOUND_GRACE_SECONDS`
counted from the first 404. :meth:`WaitState.to_dict`/:meth:`WaitState.restore` carry the
counters across reschedules (the sensor keeps them in the task state store).

Event (JSON only)::

    {"status": "success" | "failed" | "error" | "timeout",
     "kling_task_id": str, "client_business_id": str | None,
     "task": <KlingTask.to_dict()> | None, "message": str, "error_code": str | None,
     "error_type": str | None}
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.api import RetryPolicy, is_throttle, is_transient
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingContentPolicyError,
    KlingInsufficientCreditsError,
    KlingRequestValidationError,
    KlingTaskFailedError,
    KlingTaskFailedFinalError,
    KlingTimeoutError,
    KlingValidationError,
)
from airflow_provider_kling.models import KlingTask, TaskStatus, is_content_policy, is_input_invalid

if TYPE_CHECKING:
    from airflow_provider_kling.hooks.kling import KlingHook

log = logging.getLogger(__name__)

#: Default bound of every wait (the sensor and the generate operator), seconds.
DEFAULT_TIMEOUT = 900.0
#: The longest duration (timeout, interval, grace) a task accepts, seconds: every wait ends.
MAX_SECONDS = 366 * 24 * 3600.0
MIN_POLL_INTERVAL = 1.0
#: Extra time the scheduler allows a deferral beyond the trigger's own deadline, so the trigger's
#: readable timeout event normally arrives first.
DEFER_GRACE_SECONDS = 60.0
#: A just-created task may be invisible for a while; 404 is tolerated this long from the first 404.
NOT_FOUND_GRACE_SECONDS = 60.0
#: Polls (single attempts) that may fail in a row with a transient error before the wait gives up.
MAX_CONSECUTIVE_ERRORS = 10
#: Extra polls when the API says ``completed`` but gives no URL, before it is a contract error.
NO_URL_EXTRA_POLLS = 3
JITTER = 0.05
#: Trigger wake-ups are aligned to a grid (on the loop's clock) of this fraction of the poll
#: interval, at most :data:`WAKE_GRID_MAX_SECONDS`: polls due within the same grid step go out in one
#: event-loop iteration instead of one wake-up each (0.1 s for a 10 s interval). Each wake-up moves
#: by at most half a step either way, so the mean interval is the one asked for.
WAKE_GRID_FRACTION = 0.02
#: The largest wake-up grid step, seconds.
WAKE_GRID_MAX_SECONDS = 0.1
#: A trigger's first poll comes after this fraction of the interval at the earliest (uniformly
#: spread up to the whole interval), never later than the interval.
FIRST_POLL_FROM = 0.5


def seconds(name: str, value: float | timedelta, minimum: float = 0.0) -> float:
    """A duration given as seconds or a ``timedelta``, checked at DAG parse: more than ``minimum``
    and at most :data:`MAX_SECONDS` (an infinite timeout would be a wait that never ends, and
    Airflow's deferral timeout cannot hold it)."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(number, bool)
        or not isinstance(number, (int, float))
        or not minimum < number <= MAX_SECONDS  # also refuses NaN and infinity
    ):
        raise KlingValidationError(
            f"{name}={value!r}: must be a number of seconds (or a timedelta) > {minimum:g} and at most "
            f"{MAX_SECONDS:.0f} (366 days)"
        )
    return float(number)


def check_interval(name: str, value: float | timedelta) -> float:
    """A poll interval in seconds: at least 1 s."""
    return seconds(name, value, MIN_POLL_INTERVAL - 1e-9)


class EventStatus(str, Enum):
    """How a wait ended."""

    SUCCESS = "success"
    FAILED = "failed"
    ERROR = "error"
    TIMEOUT = "timeout"


def make_event(
    status: EventStatus,
    kling_task_id: str,
    client_business_id: str | None,
    *,
    task: KlingTask | None = None,
    message: str = "",
    error_code: str | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """A trigger event payload: everything ``execute_complete`` needs, JSON primitives only."""
    return {
        "status": status.value,
        "kling_task_id": kling_task_id,
        "client_business_id": client_business_id or (task.client_business_id if task else None),
        "task": task.to_dict() if task else None,
        "message": message,
        "error_code": error_code,
        "error_type": error_type,
    }


def jittered(interval: float) -> float:
    """The poll interval with +/-5 % jitter, so many waits do not poll in lockstep."""
    return interval * random.uniform(1 - JITTER, 1 + JITTER)


class WaitState:
    """Decides, after every poll, whether the wait goes on or which event ends it.

    The only retry authority while waiting: polls are single attempts, and this state counts
    transient errors, honours ``Retry-After`` and measures the 404 grace.

    :param kling_task_id: the task being waited for.
    :param client_business_id: its idempotency id, if known (carried into the result).
    :param end_time: absolute deadline, epoch seconds (survives triggerer restarts).
    :param not_found_grace: seconds a 404 is tolerated from the first 404 (default
        :data:`NOT_FOUND_GRACE_SECONDS`).
    """

    def __init__(
        self,
        kling_task_id: str,
        client_business_id: str | None,
        end_time: float,
        not_found_grace: float | None = None,
    ) -> None:
        self.kling_task_id = kling_task_id
        self.client_business_id = client_business_id
        self.end_time = end_time
        self.not_found_grace = NOT_FOUND_GRACE_SECONDS if not_found_grace is None else not_found_grace
        self.last_task: KlingTask | None = None
        self.errors = 0
        self.no_url = 0
        self.missing_since: float | None = None
        #: When a 404 is seen and no earlier one is known, when to count it from (``None``: now). A
        #: reschedule-mode sensor without a state store sets the wait's start here (see the sensor).
        self.assumed_missing_since: float | None = None
        self.retry_after: float | None = None
        self.throttled = False
        self._warned_status: str | None = None

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """The counters that must survive a reschedule (JSON)."""
        return {
            "kling_task_id": self.kling_task_id,
            "end_time": self.end_time,
            "errors": self.errors,
            "no_url": self.no_url,
            "missing_since": self.missing_since,
        }

    def restore(self, data: Any) -> bool:
        """Take the counters of an earlier poke of the same wait; ``False`` when ``data`` is not one."""
        if not isinstance(data, dict) or data.get("kling_task_id") != self.kling_task_id:
            return False
        try:
            self.end_time = float(data["end_time"])
            self.errors = int(data.get("errors") or 0)
            self.no_url = int(data.get("no_url") or 0)
            missing = data.get("missing_since")
            self.missing_since = None if missing is None else float(missing)
        except (KeyError, TypeError, ValueError):
            return False
        return True

    # ------------------------------------------------------------------ decisions

    def event(
        self, status: EventStatus, message: str, error_code: str | None = None, error_type: str | None = None
    ) -> dict[str, Any]:
        return make_event(
            status,
            self.kling_task_id,
            self.client_business_id,
            task=self.last_task,
            message=message,
            error_code=error_code,
            error_type=error_type,
        )

    def remaining(self, now: float | None = None) -> float:
        return self.end_time - (time.time() if now is None else now)

    def next_delay(self, interval: float) -> float:
        """Seconds until the next poll: the jittered interval, at least ``Retry-After``, within the deadline."""
        delay = max(jittered(interval), self.retry_after or 0.0)
        return max(0.0, min(delay, self.remaining()))

    def timeout_event(self, detail: str = "") -> dict[str, Any]:
        """The ``timeout`` event (``detail`` says why, when not the generation's own length)."""
        progress = f" (last status {self.last_task.status.value}, {self.last_task.progress}%)" if self.last_task else ""
        reason = " while rate limited" if self.throttled else ""
        return self.event(
            EventStatus.TIMEOUT,
            f"Kling task {self.kling_task_id} timed out{progress}{reason}{detail}; "
            "the generation keeps running remotely and a retry resumes it",
            "timeout",
        )

    def on_task(self, task: KlingTask | None, now: float | None = None) -> dict[str, Any] | None:
        """The event a poll result ends the wait with, or ``None`` to keep waiting (``None`` task = 404)."""
        now = time.time() if now is None else now
        self.errors = 0
        self.retry_after = None
        self.throttled = False
        if task is None:
            if self.missing_since is None:
                assumed = self.assumed_missing_since
                self.missing_since = now if assumed is None else min(assumed, now)
            if now - self.missing_since >= self.not_found_grace:
                return self.event(
                    EventStatus.ERROR,
                    f"Kling task {self.kling_task_id} not found (404) for {now - self.missing_since:.0f} s",
                    "task_not_found",
                )
            return None
        self.missing_since = self.assumed_missing_since = None
        self.last_task = task
        if task.is_unknown_status and task.raw_status != self._warned_status and task.status is not TaskStatus.FAILED:
            self._warned_status = task.raw_status
            log.warning("Kling task %s has unknown status %r; treating it as running", task.id, task.raw_status)
        if task.status is TaskStatus.FAILED:
            return self.event(
                EventStatus.FAILED,
                f"{task.error_code or 'failed'}: {task.error_message or ''}".strip(),
                task.error_code,
            )
        if task.status is TaskStatus.COMPLETED:
            if task.video_url:
                return self.event(EventStatus.SUCCESS, f"Kling task {task.id} completed")
            self.no_url += 1
            if self.no_url > NO_URL_EXTRA_POLLS:
                return self.event(
                    EventStatus.ERROR,
                    f"Kling task {task.id} completed without a video URL "
                    f"({self.no_url} polls); it was billed, so it is not resubmitted",
                    "provider_contract_error",
                )
        return None

    def on_error(self, err: BaseException) -> dict[str, Any] | None:
        """The event a failed poll ends the wait with, or ``None`` to poll again."""
        if is_throttle(err):
            self.throttled = True
            self.retry_after = getattr(err, "retry_after", None)
            log.info("Kling poll throttled (%s); waiting until the next poll", err)
            return None
        self.retry_after = None
        if is_transient(err):
            self.errors += 1
            if self.errors < MAX_CONSECUTIVE_ERRORS:
                log.warning("Kling poll failed (%s); %d of %d in a row", err, self.errors, MAX_CONSECUTIVE_ERRORS)
                return None
        return self.error_event(err)

    def error_event(self, err: BaseException) -> dict[str, Any]:
        """The ``error`` event for any exception (its class name lets ``execute_complete`` re-raise it)."""
        code = getattr(err, "code", None)
        return self.event(
            EventStatus.ERROR,
            str(err) or type(err).__name__,
            code if isinstance(code, str) else None,
            type(err).__name__,
        )


# ---------------------------------------------------------------------- the poll step


def poll_policy(state: WaitState) -> RetryPolicy:
    """The one poll policy: a single attempt (WaitState decides about the next one) that ends by the
    wait's deadline, so a slow or trickling server never holds a poll past it."""
    return RetryPolicy.single_attempt(state.end_time)


def poll(hook: KlingHook, state: WaitState) -> dict[str, Any] | None:
    """One status check (one HTTP attempt) with the sync hook; the event that ends the wait, or ``None``."""
    try:
        task = hook.get_task(state.kling_task_id, policy=poll_policy(state), missing_ok=True)
    except Exception as err:  # every failure is the state's to judge
        return state.on_error(err)
    return state.on_task(task)


async def apoll(hook: KlingHook, state: WaitState) -> dict[str, Any] | None:
    """Async :func:`poll`, on the event loop's shared session."""
    try:
        task = await hook.aget_task(state.kling_task_id, policy=poll_policy(state), missing_ok=True)
    except Exception as err:
        return state.on_error(err)
    return state.on_task(task)


def wait_blocking(hook: KlingHook, state: WaitState, poll_interval: float) -> dict[str, Any]:
    """Wait in this process (``deferrable=False``): :func:`poll` until an event or the deadline."""
    while True:
        if state.remaining() <= 0:
            return state.timeout_event()
        time.sleep(state.next_delay(poll_interval))
        event = poll(hook, state)
        if event is not None:
            return event


def coalesced(now: float, delay: float, interval: float, remaining: float, minimum: float = 0.0) -> float:
    """``delay`` moved to the nearest step of the wake-up grid (timer coalescing: every wait due in
    the same step wakes in one loop iteration).

    :param now: the loop's clock.
    :param delay: the jittered delay until the next poll.
    :param interval: the poll interval (the grid is :data:`WAKE_GRID_FRACTION` of it).
    :param remaining: seconds to the deadline: a wake-up that would pass it keeps its exact ``delay``.
    :param minimum: never wake earlier than this (a ``Retry-After``).
    """
    grid = min(WAKE_GRID_MAX_SECONDS, interval * WAKE_GRID_FRACTION)
    aligned = math.ceil((now + delay - grid / 2) / grid) * grid - now
    if aligned > remaining:
        return delay
    return max(aligned, minimum, 0.0)


async def await_event(hook: KlingHook, state: WaitState, poll_interval: float) -> dict[str, Any]:
    """The trigger's wait: :func:`apoll` until an event or the deadline, never blocking the loop.

    Wake-ups are coalesced on a grid (see :func:`coalesced`).
    """
    loop = asyncio.get_running_loop()
    # Triggers that start together (a triggerer restart, a backfill deferring) spread their first
    # polls over the second half of the interval instead of all polling one interval later.
    scale = random.uniform(FIRST_POLL_FROM, 1.0)
    while True:
        remaining = state.remaining()
        if remaining <= 0:
            return state.timeout_event()
        delay = state.next_delay(poll_interval) * scale
        scale = 1.0
        await asyncio.sleep(coalesced(loop.time(), delay, poll_interval, remaining, state.retry_after or 0.0))
        event = await apoll(hook, state)
        if event is not None:
            return event


# ---------------------------------------------------------------------- the event's meaning


def result_from_event(event: Any, *, can_regenerate: bool = True) -> dict[str, Any]:
    """Validate a trigger event and return the result dict, or raise the matching Kling error.

    :param event: the payload the trigger yielded.
    :param can_regenerate: whether a retry can make a new generation after a failed one (the
        generate operator can; a sensor cannot, so its failures are final).
    :raises KlingAPIError: missing or malformed event, or an error event.
    :raises KlingContentPolicyError: the generation was rejected by the content policy.
    :raises KlingTaskFailedFinalError: the input was invalid, or a sensor saw a failure.
    :raises KlingTaskFailedError: the generation failed (retryable when ``can_regenerate``).
    :raises KlingTimeoutError: the deadline passed.
    """
    if not isinstance(event, dict) or event.get("status") not in {s.value for s in EventStatus}:
        raise KlingAPIError(f"invalid trigger event: {event!r:.200}", code="invalid_event")
    status = EventStatus(event["status"])
    task_id = event.get("kling_task_id")
    message = event.get("message") or ""
    task = KlingTask.from_dict(event["task"]) if isinstance(event.get("task"), dict) else None
    if status is EventStatus.SUCCESS:
        if task is None or task.status is not TaskStatus.COMPLETED or not task.video_url:
            raise KlingAPIError(f"invalid success event for Kling task {task_id}", code="invalid_event")
        return task.to_result(event.get("client_business_id"))
    if status is EventStatus.TIMEOUT:
        raise KlingTimeoutError(message or f"Kling task {task_id} timed out")
    if status is EventStatus.FAILED:
        code = event.get("error_code") or (task.error_code if task else None)
        detail = task.error_message if task and task.error_message else message
        if is_content_policy(code, detail):
            raise KlingContentPolicyError(f"content policy ({code}): {detail}", task_id=task_id, code=code)
        if is_input_invalid(code):
            raise KlingTaskFailedFinalError(
                f"Kling task {task_id} failed: invalid input ({code}): {detail}; "
                "generating again with the same input fails the same way",
                task_id=task_id,
                code=code,
            )
        error = KlingTaskFailedError if can_regenerate else KlingTaskFailedFinalError
        raise error(f"Kling task {task_id} failed ({code}): {detail}", task_id=task_id, code=code)
    error_class = _ERROR_TYPES.get(event.get("error_type") or "", KlingAPIError)
    raise error_class(message or f"Kling task {task_id}: error", code=event.get("error_code"))


#: Errors an ``error`` event re-raises by name, so a bad key stays non-retryable after the trigger.
_ERROR_TYPES: dict[str, type[KlingAPIError]] = {
    cls.__name__: cls for cls in (KlingAPIError, KlingAuthError, KlingInsufficientCreditsError)
} | {"KlingValidationError": KlingRequestValidationError, "KlingRequestValidationError": KlingRequestValidationError}
