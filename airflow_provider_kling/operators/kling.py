"""Operators that submit Kling video generations (and wait for them)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.delivery import check_output_path, deliver, push_pending_link
from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.idempotency import Submission, base_business_id, check_balance, submit_once
from airflow_provider_kling.lineage import datasets, operator_lineage
from airflow_provider_kling.links import KlingVideoLink
from airflow_provider_kling.media import ImageFile, read_image, resolve_location
from airflow_provider_kling.models import KlingVideoRequest, collect_problems, has_jinja
from airflow_provider_kling.wait import (
    DEFAULT_TIMEOUT,
    DEFER_GRACE_SECONDS,
    WaitState,
    check_interval,
    result_from_event,
    seconds,
    wait_blocking,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Request keyword arguments shared by both operators (all templated).
REQUEST_FIELDS = (
    "prompt",
    "mode",
    "duration",
    "aspect_ratio",
    "image_urls",
    "audio",
    "negative_prompt",
    "watermark",
    "extra_body",
)
#: Templated fields that are not part of the request body.
MEDIA_FIELDS = ("image_paths",)
#: XCom key of the request digest (what the generation's ``client_business_id`` covers).
REQUEST_DIGEST_XCOM_KEY = "kling_request_digest"


class KlingSubmitOperator(BaseOperator):
    """Submit one Kling v3 generation and return its task id.

    The submit is idempotent per task instance: a retry resumes the generation it already started
    (looked up by ``client_business_id``) and pays again only after a retryable failure. XCom:
    ``return_value`` and ``kling_task_id`` hold the task id, ``client_business_id`` its id,
    ``kling_request_digest`` the digest of the request. Every request argument may be a TaskFlow
    output, hold one, or be mapped with ``expand``: plain literal values are checked at DAG parse,
    rendered and resolved ones before any request. An edited request is a new generation.

    :param prompt: what to generate (1-2500 characters).
    :param mode: ``std`` (720P) or ``pro`` (1080P).
    :param duration: 5, 10 or 15 seconds (15 only without images).
    :param aspect_ratio: ``16:9``, ``9:16`` or ``1:1``.
    :param image_urls: 0-2 public http(s) URLs: one = first frame, two = first + last frame.
    :param image_paths: 0-2 images to upload instead (local paths or ``ObjectStoragePath`` URIs such
        as ``s3://aws_default@bucket/frame.png``, ``file://…``, ``memory://…``), in first/last-frame
        order. Read and checked (JPEG/PNG/WebP/GIF, at most 10 MB) before any request, and uploaded
        right before a new generation is submitted, never when an existing one is adopted. The
        request digest covers their SHA-256, so a retry with the same files adopts.
    :param audio: generate sound (billed as "Sound").
    :param negative_prompt: what to avoid (``metadata.negative_prompt``).
    :param watermark: ``metadata.watermark``.
    :param extra_body: extra API fields merged into the request body.
    :param model: ``kling-v3``.
    :param kling_conn_id: the Airflow connection id.
    :param submit_timeout: how long the submit may wait out 429/503 (seconds or timedelta; 15 min).
    :param min_balance_credits: budget guard: before paying for a new generation (never when adopting
        one) the balance is read, and below this many credits the task fails with
        :class:`~airflow_provider_kling.exceptions.KlingInsufficientCreditsError` (not retried)
        without creating anything. An unlimited key always passes.
    """

    template_fields: Sequence[str] = (*REQUEST_FIELDS, *MEDIA_FIELDS, "model")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        prompt: str,
        mode: str = "std",
        duration: int | str = 5,
        aspect_ratio: str = "16:9",
        image_urls: list[str] | tuple[str, ...] | None = None,
        image_paths: list[Any] | tuple[Any, ...] | None = None,
        audio: bool | str = False,
        negative_prompt: str | None = None,
        watermark: bool | str | None = None,
        extra_body: dict[str, Any] | None = None,
        model: str = "kling-v3",
        kling_conn_id: str = KlingHook.default_conn_name,
        submit_timeout: float | timedelta = DEFAULT_TIMEOUT,
        min_balance_credits: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.mode = mode
        self.duration = duration
        self.aspect_ratio = aspect_ratio
        self.image_urls = image_urls
        self.image_paths = image_paths
        self.audio = audio
        self.negative_prompt = negative_prompt
        self.watermark = watermark
        self.extra_body = extra_body
        self.model = model
        self.kling_conn_id = kling_conn_id
        self.submit_timeout = seconds("submit_timeout", submit_timeout)
        self.min_balance_credits = _min_balance(min_balance_credits)
        problems = collect_problems(self._checked_fields(), skip_jinja=True) + self._parse_time_problems()
        if problems:
            raise KlingValidationError(problems)
        self._result: dict[str, Any] | None = None

    def _request_fields(self) -> dict[str, Any]:
        return {"model": self.model, **{name: getattr(self, name) for name in REQUEST_FIELDS}}

    def _checked_fields(self) -> dict[str, Any]:
        return {**self._request_fields(), "image_paths": self.image_paths}

    def _parse_time_problems(self) -> list[str]:
        """Where literal ``image_paths`` (and ``output_path``) point, checked without I/O."""
        problems = []
        if isinstance(self.image_paths, (list, tuple)):
            for i, path in enumerate(self.image_paths):
                if isinstance(path, str) and path.strip() and not has_jinja(path):
                    try:
                        resolve_location(path, f"image_paths[{i}]")
                    except KlingValidationError as err:
                        problems += err.problems
        return problems

    def build_request(self) -> KlingVideoRequest:
        """The validated request from the rendered fields (raises before any HTTP call)."""
        problems = collect_problems(self._checked_fields())
        if problems:
            raise KlingValidationError(problems)
        return KlingVideoRequest.from_kwargs(**self._request_fields())

    def read_images(self) -> list[ImageFile]:
        """Read and check the rendered ``image_paths`` (type, size) before any request."""
        return [read_image(path, field=f"image_paths[{i}]") for i, path in enumerate(self.image_paths or ())]

    def check_destination(self) -> None:
        """Check where the result goes, before any request (the generate operator's ``output_path``)."""

    def submit(self, context: Context, hook: KlingHook) -> Submission:
        """Validate, then adopt or submit this task instance's generation; push its ids to XCom."""
        request = self.build_request()
        images = self.read_images()
        self.check_destination()
        ti = context["ti"]
        digest = request.digest([image.sha256 for image in images] if images else None)
        base_id = base_business_id(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            -1 if ti.map_index is None else ti.map_index,
            hook.settings.business_id_prefix,
            digest,
        )
        policy = RetryPolicy(deadline=time.time() + self.submit_timeout)

        def before_paying() -> KlingVideoRequest:
            if self.min_balance_credits is not None:
                check_balance(hook, self.min_balance_credits, policy)
            if not images:
                return request
            urls = tuple(hook.upload_image(image) for image in images)
            self.log.info("Uploaded %d image(s) for the new generation: %s", len(urls), ", ".join(urls))
            return dataclasses.replace(request, image_urls=urls)

        submission = submit_once(
            hook, request, base_id, ti.try_number, policy=policy, request_digest=digest, before_paying=before_paying
        )
        ti.xcom_push(key=REQUEST_DIGEST_XCOM_KEY, value=digest)
        ti.xcom_push(key="kling_task_id", value=submission.task.id)
        ti.xcom_push(key="client_business_id", value=submission.client_business_id)
        return submission

    def execute(self, context: Context) -> Any:
        hook = KlingHook(self.kling_conn_id)
        try:
            return self.submit(context, hook).task.id
        finally:
            hook.close()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the input images; the stored video (else its URL) once there is one.

        ``None`` when apache-airflow-providers-openlineage is not installed.
        """
        return operator_lineage(*datasets(self.image_paths or self.image_urls or (), self._result))


def _min_balance(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise KlingValidationError(f"min_balance_credits={value!r}: must be a number of credits >= 0, or None")
    return float(value)


class KlingGenerateVideoOperator(KlingSubmitOperator):
    """Submit a Kling v3 generation and wait for the video, in one task.

    Pushes ``kling_task_id`` and ``client_business_id`` to XCom before it waits. With
    ``deferrable=True`` the wait runs on the triggerer and holds no worker slot. Returns the result
    dict (``id``, ``status``, ``video_url``, ``expires_at``, ``model``, ``client_business_id``,
    ``created_at``, ``completed_at``, ...). A failed generation is retryable: the retry makes one
    new generation; a content-policy rejection is not retried.

    Takes the request arguments of :class:`KlingSubmitOperator`, plus:

    :param poll_interval: seconds between status polls (>= 1; default 10).
    :param timeout: how long to wait for the video (seconds or timedelta; default 900).
    :param deferrable: wait on the triggerer (default ``[operators] default_deferrable``).
    :param output_path: where to store the video before the task returns (templated): a local path
        or an ``ObjectStoragePath`` URI (``s3://aws_default@bucket/clip.mp4``, ``file://…``,
        ``memory://…``); a string with a scheme is never a local path. Checked at DAG parse when
        literal, before any request when rendered. The result then has ``output_path``,
        ``size_bytes`` and ``sha256``, and the extra link opens the stored object.

    With ``outlets``, each outlet asset's event carries the generation's metadata in ``extra``
    (see :func:`airflow_provider_kling.assets.asset_extra`).
    """

    template_fields: Sequence[str] = (*KlingSubmitOperator.template_fields, "output_path")
    operator_extra_links = (KlingVideoLink(),)

    def __init__(
        self,
        *,
        poll_interval: float = 10.0,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        output_path: Any = None,
        **kwargs: Any,
    ) -> None:
        self.output_path = output_path
        super().__init__(**kwargs)
        check_output_path(output_path, at_parse=True)
        self.poll_interval = check_interval("poll_interval", poll_interval)
        self.timeout_seconds = seconds("timeout", timeout)
        self.deferrable = deferrable

    def execute(self, context: Context) -> dict[str, Any]:
        hook = KlingHook(self.kling_conn_id)
        try:
            if self.deferrable:  # before paying: a wait the triggerer cannot run must not be started
                hook.settings.check_async_transport()
            submission = self.submit(context, hook)
            task = submission.task
            state = WaitState(task.id, submission.client_business_id, time.time() + self.timeout_seconds)
            event = state.on_task(task)
            if event is None and self.deferrable:
                push_pending_link(context)
                from airflow_provider_kling.triggers.kling import KlingVideoTrigger

                self.defer(
                    trigger=KlingVideoTrigger(
                        task.id, self.kling_conn_id, self.poll_interval, state.end_time, submission.client_business_id
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=self.timeout_seconds + DEFER_GRACE_SECONDS),
                )
            if event is None:
                event = wait_blocking(hook, state, self.poll_interval)
        finally:
            hook.close()
        return self.execute_complete(context, event)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Turn the trigger's event into the result (storing the video at ``output_path``), or raise
        the matching Kling error."""
        result = result_from_event(event, can_regenerate=True)
        self._result = deliver(
            context,
            result,
            output_path=self.output_path,
            kling_conn_id=self.kling_conn_id,
            outlets=self.outlets,
            request=self.build_request(),
        )
        return self._result

    def check_destination(self) -> None:
        check_output_path(self.output_path)

    def on_kill(self) -> None:
        self.log.warning("Stopped waiting. Kling has no cancel endpoint: the generation continues and is billed.")
