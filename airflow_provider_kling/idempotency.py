"""Exactly one paid generation per task instance and request.

Every submit carries a ``client_business_id`` derived from the task instance and a digest of the
request body (:meth:`KlingVideoRequest.digest`), and the API replays
the existing task for a known id. Before submitting, :func:`submit_once` walks the chain of ids this
task instance may already have used (the base id, then one regeneration id per earlier try) and
adopts the latest generation that is running or completed, so a retry after a lost response, a
worker crash or a triggerer restart resumes instead of paying again. An edited request (another
prompt, mode, image...) has another digest, so another chain: it generates anew.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.exceptions import (
    KlingContentPolicyError,
    KlingInsufficientCreditsError,
    KlingTaskFailedError,
    KlingTaskFailedFinalError,
)
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.models import KlingTask, KlingVideoRequest, TaskStatus

log = logging.getLogger(__name__)

BASE_ID_PREFIX = "kl_"


def base_business_id(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    namespace: str = "",
    request_digest: str = "",
) -> str:
    """``kl_`` + 40 hex characters of ``sha256(dag_id, run_id, task_id, map_index, request digest)``.

    :param namespace: optional prefix (from the connection) for deployments sharing one account.
    :param request_digest: :meth:`KlingVideoRequest.digest` of the request: a changed request gets
        another id, and so a new generation.
    """
    key = f"{dag_id}\x1f{run_id}\x1f{task_id}\x1f{map_index}\x1f{request_digest}"
    return f"{namespace}{BASE_ID_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def regeneration_id(base_id: str, try_number: int) -> str:
    """The id of the new generation a retry makes after a retryable failure."""
    return f"{base_id}_r{try_number}"


def id_chain(base_id: str, try_number: int) -> list[str]:
    """Every id this task instance may have used up to ``try_number``, oldest first."""
    return [base_id] + [regeneration_id(base_id, n) for n in range(2, try_number + 1)]


@dataclass(frozen=True)
class Submission:
    """What :func:`submit_once` did.

    :param task: the generation (adopted or new).
    :param client_business_id: the id it runs under.
    :param adopted: ``True`` when an existing generation was resumed (nothing paid).
    """

    task: KlingTask
    client_business_id: str
    adopted: bool


def _usable(task: KlingTask) -> bool:
    if task.status is TaskStatus.FAILED:
        return False
    return not (task.status is TaskStatus.COMPLETED and task.is_expired())


def submit_once(
    hook: KlingHook,
    request: KlingVideoRequest,
    base_id: str,
    try_number: int,
    policy: RetryPolicy | None = None,
    request_digest: str | None = None,
    before_paying: Callable[[], KlingVideoRequest] | None = None,
) -> Submission:
    """Adopt this task instance's running or completed generation, or submit exactly one.

    Walks :func:`id_chain` and adopts the latest generation that is running or completed (and not
    expired). With none, it submits under the base id when no earlier generation exists, else under
    this try's regeneration id.

    :param request_digest: the request's digest, for the log line that says why a generation is new.
    :param before_paying: called only when a new generation is about to be submitted (never when one
        is adopted); returns the request to send (e.g. with freshly uploaded image URLs) and may
        raise to stop before anything is paid (e.g. the balance guard).
    :raises KlingContentPolicyError: an earlier generation was rejected by the content policy.
    :raises KlingTaskFailedFinalError: an earlier generation failed because its input is invalid.
    :raises KlingTaskFailedError: this try's own id already exists and its generation failed
        (retryable: the next try generates again under its own id).
    """
    chain = id_chain(base_id, max(1, try_number))
    found = [(bid, task) for bid in chain if (task := hook.get_task(bid, policy=policy, missing_ok=True))]
    usable = [(bid, task) for bid, task in found if _usable(task)]
    if usable:
        business_id, task = usable[-1]
        log.info("Resuming Kling task %s (%s, %s): nothing new is paid", task.id, business_id, task.status.value)
        return Submission(task, business_id, adopted=True)
    if not found:
        log.info(
            "No generation yet for this request (digest %s…) under %s: generating it. "
            "An edited request (prompt, mode, images...) makes a new generation.",
            (request_digest or "?")[:12],
            base_id,
        )
        request = before_paying() if before_paying else request
        return Submission(hook.submit_video(request, base_id, policy=policy), base_id, adopted=False)

    for _, task in found:
        if task.is_content_policy:
            raise KlingContentPolicyError(
                f"content policy ({task.error_code}): {task.error_message or 'rejected'}; "
                f"not generating again (task {task.id})",
                task_id=task.id,
                code=task.error_code,
            )
        if task.is_input_invalid:
            raise KlingTaskFailedFinalError(
                f"generation {task.id} failed: invalid input ({task.error_code}): "
                f"{task.error_message or 'rejected'}; not generating again with the same input",
                task_id=task.id,
                code=task.error_code,
            )
    failed_id, failed = found[-1]
    own_id = chain[-1]
    if failed_id == own_id:
        raise KlingTaskFailedError(
            f"generation {failed.id} ({failed_id}) of this try already ended {_why(failed)}; "
            "not paying again under the same try (a retry generates again)",
            task_id=failed.id,
            code=failed.error_code,
        )
    log.warning(
        "Generating again under %s: the earlier generation %s (%s) %s", own_id, failed.id, failed_id, _why(failed)
    )
    request = before_paying() if before_paying else request
    return Submission(hook.submit_video(request, own_id, policy=policy), own_id, adopted=False)


def check_balance(hook: KlingHook, min_credits: float, policy: RetryPolicy | None = None) -> None:
    """The budget guard: read the balance and refuse to pay below ``min_credits``.

    An unlimited key always passes.

    :raises KlingInsufficientCreditsError: the balance is below the minimum (not retried).
    """
    balance: dict[str, Any] = hook.get_balance(policy)
    if balance.get("unlimited_quota"):
        log.info("Balance check: unlimited quota (minimum %g credits)", min_credits)
        return
    try:
        credits = float(balance["remain_credits"])
    except (KeyError, TypeError, ValueError):
        raise KlingInsufficientCreditsError(
            f"min_balance_credits={min_credits:g}: the balance answer has no usable remain_credits "
            f"({balance.get('remain_credits')!r}); not generating",
            code="balance_unknown",
        ) from None
    if credits < min_credits:
        raise KlingInsufficientCreditsError(
            f"balance {credits:.15g} credits is below min_balance_credits={min_credits:.15g}; not generating "
            "(nothing was created or charged)",
            code="below_min_balance",
        )
    log.info("Balance check: %g credits >= min_balance_credits=%g", credits, min_credits)


def _why(task: KlingTask) -> str:
    if task.status is TaskStatus.COMPLETED and task.expires_at is not None:
        return f"completed but its video URL expired at {task.expires_at.isoformat()}"
    return f"failed ({task.error_code or 'unknown'}: {task.error_message or 'no message'})"
