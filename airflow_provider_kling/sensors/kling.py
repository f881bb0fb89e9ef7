"""KlingVideoSensor: waits for a Kling generation, on the triggerer when deferrable."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_kling.api import RetryPolicy, is_throttle, is_transient
from airflow_provider_kling.events import WaitState, result_from_event
from airflow_provider_kling.exceptions import KlingError, KlingTimeoutError, KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.links import VIDEO_URL_XCOM_KEY, KlingVideoLink
from airflow_provider_kling.operators.kling import DEFAULT_TIMEOUT, DEFER_GRACE_SECONDS, check_interval, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context


class KlingVideoSensor(BaseSensorOperator):
    """Wait for a Kling generation to finish and return the result dict.

    With ``deferrable=True`` it checks once (one attempt: a finished generation returns at once; a
    429/503 or transient error defers straight away) and then waits on the triggerer, holding no
    worker slot. A sensor cannot regenerate: a failed generation fails it without retries. A
    timeout is retryable: the retry waits again for the same generation with a fresh deadline.

    :param kling_task_id: the task id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param kling_conn_id: the Airflow connection id.
    :param poke_interval: seconds between polls (>= 1; default 10).
    :param timeout: how long to wait (seconds or timedelta; default 900).
    :param deferrable: wait on the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("kling_task_id",)
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        kling_task_id: str,
        kling_conn_id: str = KlingHook.default_conn_name,
        poke_interval: float = 10.0,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            poke_interval=check_interval("poke_interval", poke_interval),
            timeout=seconds("timeout", timeout),
            **kwargs,
        )
        self.kling_task_id = kling_task_id
        self.kling_conn_id = kling_conn_id
        self.deferrable = deferrable
        self._state: WaitState | None = None

    def _wait_state(self) -> WaitState:
        if self._state is None or self._state.kling_task_id != self.kling_task_id:
            self._state = WaitState(str(self.kling_task_id), None, time.time() + float(self.timeout))
        return self._state

    def execute(self, context: Context) -> Any:
        if not self.kling_task_id or not isinstance(self.kling_task_id, str):
            raise KlingValidationError(f"kling_task_id={self.kling_task_id!r}: no task id to wait for")
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                raise KlingTimeoutError(
                    f"timed out after {float(self.timeout):g} s waiting for Kling task "
                    f"{self.kling_task_id}; the generation keeps running"
                ) from None
        state = self._wait_state()
        hook = KlingHook(self.kling_conn_id)
        try:
            event = state.on_task(hook.get_task(state.kling_task_id, RetryPolicy.single_attempt(), missing_ok=True))
        except KlingError as err:
            if not (is_throttle(err) or is_transient(err)):
                raise
            self.log.info("Status check failed (%s); waiting on the triggerer", err)
            event = None
        finally:
            hook.close()
        if event is not None:
            return self.execute_complete(context, event)
        # The link reads this key while the task is deferred; it fills in on success.
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value="")
        from airflow_provider_kling.triggers.kling import KlingVideoTrigger

        self.defer(
            trigger=KlingVideoTrigger(state.kling_task_id, self.kling_conn_id, self.poke_interval, state.end_time),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + DEFER_GRACE_SECONDS),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        state = self._wait_state()
        hook = KlingHook(self.kling_conn_id)
        try:
            event = state.on_task(hook.get_task(state.kling_task_id, missing_ok=True))
        except KlingError as err:
            event = state.on_error(err)
        finally:
            hook.close()
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, event))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Turn the trigger's event into the result, or raise the matching Kling error (never retried
        for a failed generation: a sensor cannot make a new one)."""
        result = result_from_event(event, can_regenerate=False)
        context["ti"].xcom_push(key=VIDEO_URL_XCOM_KEY, value=result["video_url"])
        return result
