"""The wait: what each poll means, the one trigger event it ends in, and the one event validator.

The trigger (async) and the blocking waits (sync) drive the same :class:`WaitState`, so a poll
result means the same thing everywhere. :func:`result_from_event` is the validator that both the
operator's and the sensor's ``execute_complete`` use.

Event (JSON only)::

    {"status": "success" | "failed" | "error" | "timeout",
     "kling_task_id": str, "client_business_id": str | None,
     "task": <KlingTask.to_dict()> | None, "message": str, "error_code": str | None}
"""

from __future__ import annotations

import logging
import random
import time
from enum import Enum
from typing import Any

from airflow_provider_kling.api import is_throttle
from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingAuthError,
    KlingContentPolicyError,
    KlingError,
    KlingInsufficientCreditsError,
    KlingRequestValidationError,
    KlingTaskFailedError,
    KlingTaskFailedFinalError,
    KlingTimeoutError,
)
from airflow_provider_kling.models import KlingTask, TaskStatus

log = logging.getLogger(__name__)

#: A just-created task may be invisible for a while; 404 is tolerated this long.
NOT_FOUND_GRACE_SECONDS = 60.0
#: Polls that may fail in a row (after the hook's own retries) before the wait gives up.
MAX_CONSECUTIVE_ERRORS = 5
#: Extra polls when the API says ``completed`` but gives no URL, before it is a contract error.
NO_URL_EXTRA_POLLS = 3
JITTER = 0.05


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

    :param kling_task_id: the task being waited for.
    :param client_business_id: its idempotency id, if known (carried into the result).
    :param end_time: absolute deadline, epoch seconds (survives triggerer restarts).
    """

    def __init__(self, kling_task_id: str, client_business_id: str | None, end_time: float) -> None:
        self.kling_task_id = kling_task_id
        self.client_business_id = client_business_id
        self.end_time = end_time
        self.last_task: KlingTask | None = None
        self._errors = 0
        self._no_url = 0
        self._missing_since: float | None = None
        self._warned_status: str | None = None

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

    def timeout_event(self, reason: str = "") -> dict[str, Any]:
        progress = f" (last status {self.last_task.status.value}, {self.last_task.progress}%)" if self.last_task else ""
        return self.event(
            EventStatus.TIMEOUT,
            f"Kling task {self.kling_task_id} timed out{progress}{reason}; "
            "the generation keeps running remotely and a retry resumes it",
            "timeout",
        )

    def on_task(self, task: KlingTask | None, now: float | None = None) -> dict[str, Any] | None:
        """The event a poll result ends the wait with, or ``None`` to keep waiting (``None`` task = 404)."""
        now = time.time() if now is None else now
        self._errors = 0
        if task is None:
            self._missing_since = self._missing_since or now
            if now - self._missing_since >= NOT_FOUND_GRACE_SECONDS:
                return self.event(
                    EventStatus.ERROR,
                    f"Kling task {self.kling_task_id} not found (404) for {NOT_FOUND_GRACE_SECONDS:.0f} s",
                    "task_not_found",
                )
            return None
        self._missing_since = None
        self.last_task = task
        if task.is_unknown_status and task.raw_status != self._warned_status:
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
            self._no_url += 1
            if self._no_url > NO_URL_EXTRA_POLLS:
                return self.event(
                    EventStatus.ERROR,
                    f"Kling task {task.id} completed without a video URL "
                    f"({self._no_url} polls); it was billed, so it is not resubmitted",
                    "provider_contract_error",
                )
        return None

    def on_error(self, err: KlingError) -> dict[str, Any] | None:
        """The event a failed poll ends the wait with, or ``None`` to poll again."""
        if is_throttle(err):
            return self.timeout_event(" while rate limited")
        if isinstance(err, KlingAPIError) and (
            err.status is None or err.status >= 500 or err.code == "malformed_response"
        ):
            self._errors += 1
            if self._errors < MAX_CONSECUTIVE_ERRORS:
                log.warning("Kling poll failed (%s); %d of %d in a row", err, self._errors, MAX_CONSECUTIVE_ERRORS)
                return None
        return self.event(EventStatus.ERROR, str(err), getattr(err, "code", None), type(err).__name__)


def result_from_event(event: Any, *, can_regenerate: bool = True) -> dict[str, Any]:
    """Validate a trigger event and return the result dict, or raise the matching Kling error.

    :param event: the payload the trigger yielded.
    :param can_regenerate: whether a retry can make a new generation after a failed one (the
        generate operator can; a sensor cannot, so its failures are final).
    :raises KlingAPIError: missing or malformed event, or an error event.
    :raises KlingContentPolicyError: the generation was rejected by the content policy.
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
        if (task is not None and task.is_content_policy) or code == "content_policy_violation":
            raise KlingContentPolicyError(f"content policy ({code}): {detail}", task_id=task_id, code=code)
        error = KlingTaskFailedError if can_regenerate else KlingTaskFailedFinalError
        raise error(f"Kling task {task_id} failed ({code}): {detail}", task_id=task_id, code=code)
    error_class = _ERROR_TYPES.get(event.get("error_type") or "", KlingAPIError)
    raise error_class(message or f"Kling task {task_id}: error", code=event.get("error_code"))


#: Errors an ``error`` event re-raises by name, so a bad key stays non-retryable after the trigger.
_ERROR_TYPES: dict[str, type[KlingAPIError]] = {
    cls.__name__: cls for cls in (KlingAPIError, KlingAuthError, KlingInsufficientCreditsError)
} | {"KlingValidationError": KlingRequestValidationError, "KlingRequestValidationError": KlingRequestValidationError}
