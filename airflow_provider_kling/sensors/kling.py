"""KlingVideoSensor: waits for a Kling generation, on the triggerer when deferrable.

The wait is :mod:`airflow_provider_kling.wait`'s: ``poke`` and the check before deferring are one
:func:`~airflow_provider_kling.wait.poll` each, judged by one :class:`WaitState`.

State across reschedules: in ``reschedule`` mode Airflow rebuilds the sensor for every poke, and on
Airflow 3.3 the execution API clears the task instance's XComs at the start of every poke that is
not a resumption from a deferral (``ti_run`` sends ``xcom_keys_to_clear`` when ``next_method`` is
unset), so XCom cannot carry the wait. The task state store (``context["task_state_store"]``,
scoped to the task instance try and kept across its reschedules) can: the sensor keeps
``WaitState.to_dict()`` (first-404 time, error counters, deadline) under the key
:data:`STATE_KEY` and restores it at the next poke. The deadline in reschedule mode is the first
reschedule date + ``timeout``, as Airflow's own sensor timeout counts it.

Airflow before 3.3 has no task state store (and clears XCom at every poke too). There the only
record that survives a reschedule is the first ``TaskReschedule``'s start date (the sensor's first
poke, ``ti.get_first_reschedule_date``): a 404 seen on a later poke counts from it, which is exact
for an id that never appeared and conservative (shorter) for one that disappeared later. The
transient-error counter does not survive there; such a wait ends at its deadline. In ``poke`` and
deferrable mode the counters live in the instance or the trigger on every Airflow.

Airflow's meaning of ``soft_fail``: a timeout becomes a skip, a failure stays a failure. The task
SDK's ``BaseSensorOperator`` also skips every ``AirflowFailException`` raised by ``poke`` and every
``AirflowException`` raised by ``execute_complete``; this sensor therefore carries failures past
that handling, so a failed generation is never skipped, while its :class:`KlingSensorTimeout` is,
in ``poke``, ``reschedule`` and deferrable mode alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_kling.compat import TaskDeferralTimeout
from airflow_provider_kling.delivery import check_output_path, deliver, push_pending_link
from airflow_provider_kling.exceptions import KlingSensorTimeout, KlingTimeoutError, KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.lineage import datasets, operator_lineage
from airflow_provider_kling.links import KlingVideoLink
from airflow_provider_kling.wait import (
    DEFAULT_TIMEOUT,
    DEFER_GRACE_SECONDS,
    NOT_FOUND_GRACE_SECONDS,
    WaitState,
    check_interval,
    poll,
    result_from_event,
    seconds,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Key of the wait's counters in the task state store (reschedule mode).
STATE_KEY = "kling_sensor_wait"
#: What a rendered ``kling_task_id`` can never be: empty, a null spelled out, a list/dict/tuple repr.
_IMPOSSIBLE_ID = re.compile(r"^(?:|none|null|nil|undefined|\[.*|\{.*|\(.*)$", re.IGNORECASE | re.DOTALL)


class _PokeFailure(Exception):
    """Carries a failure out of ``poke`` past the base sensor's ``soft_fail`` handling (which would
    turn any ``AirflowFailException`` into a skip); :meth:`KlingVideoSensor.execute` re-raises it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class KlingVideoSensor(BaseSensorOperator):
    """Wait for a Kling generation to finish and return the result dict.

    With ``deferrable=True`` it checks once (one attempt: a finished generation returns at once; a
    429/503 or transient error defers straight away) and then waits on the triggerer, holding no
    worker slot. A sensor cannot regenerate: a failed generation fails it without retries, also
    under ``soft_fail``. Its timeout is :class:`KlingSensorTimeout`, Airflow's sensor timeout: not
    retried, and ``soft_fail=True`` makes it a skip in every mode.

    :param kling_task_id: the task id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param kling_conn_id: the Airflow connection id.
    :param poke_interval: seconds between polls (>= 1; default 10).
    :param timeout: how long to wait (seconds or timedelta; default 900).
    :param not_found_grace: how long the task id may answer 404 (counted from the first 404)
        before the sensor fails (seconds or timedelta; default 60).
    :param deferrable: wait on the triggerer (default ``[operators] default_deferrable``).
    :param output_path: where to store the video before the task returns (templated): a local path
        or an ``ObjectStoragePath`` URI (``s3://aws_default@bucket/clip.mp4``, ``file://…``,
        ``memory://…``). Checked at DAG parse when literal, before the first poll when rendered.
        The result then has ``output_path``, ``size_bytes`` and ``sha256``.

    With ``outlets``, each outlet asset's event carries what the sensor knows of the generation
    (task id, business id, model, video URL, expiry and, when stored, where and what was stored).
    """

    template_fields: Sequence[str] = ("kling_task_id", "output_path")
    operator_extra_links = (KlingVideoLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        kling_task_id: str,
        kling_conn_id: str = KlingHook.default_conn_name,
        poke_interval: float | timedelta = 10.0,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        not_found_grace: float | timedelta = NOT_FOUND_GRACE_SECONDS,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        output_path: Any = None,
        **kwargs: Any,
    ) -> None:
        check_output_path(output_path, at_parse=True)
        super().__init__(
            poke_interval=check_interval("poke_interval", poke_interval),
            timeout=seconds("timeout", timeout),
            **kwargs,
        )
        self.kling_task_id = kling_task_id
        self.kling_conn_id = kling_conn_id
        self.not_found_grace = seconds("not_found_grace", not_found_grace, -1e-9)
        self.deferrable = deferrable
        self.output_path = output_path
        self._state: WaitState | None = None
        self._result: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers

    def _task_id(self) -> str:
        """The rendered task id, or a non-retryable error pointing at the template."""
        value = self.kling_task_id
        text = value.strip() if isinstance(value, str) else ""
        if not isinstance(value, str) or _IMPOSSIBLE_ID.match(text) or re.search(r"[\s/\\]", value):
            raise KlingValidationError(
                f"kling_task_id={value!r}: cannot be a Kling task id (empty, None/null, a list or dict, or "
                "containing whitespace or slashes); check the kling_task_id template, e.g. "
                "\"{{ ti.xcom_pull(task_ids='submit') }}\" must pull from a task that returned an id"
            )
        return value

    def _timeout_error(self, detail: str = "") -> KlingSensorTimeout:
        return KlingSensorTimeout(
            detail
            or f"timed out after {float(self.timeout):g} s waiting for Kling task {self.kling_task_id}; "
            "the generation keeps running remotely"
        )

    def _wait_state(self, context: Context) -> WaitState:
        task_id = self._task_id()
        if self._state is not None and self._state.kling_task_id == task_id:
            return self._state
        start = time.time()
        first = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
        if first is not None:
            start = first.timestamp()
        state = WaitState(task_id, None, start + float(self.timeout), self.not_found_grace)
        store = context.get("task_state_store") if self.reschedule else None
        if store is not None and state.restore(store.get(STATE_KEY)):
            self.log.info(
                "Resuming the wait for %s: %d poll error(s) in a row, 404 since %s",
                task_id,
                state.errors,
                state.missing_since,
            )
        elif store is None and first is not None:
            # No state store (Airflow < 3.3): a 404 on a later poke counts from the first poke.
            state.assumed_missing_since = start
        self._state = state
        return state

    def _save(self, context: Context, state: WaitState) -> None:
        store = context.get("task_state_store") if self.reschedule else None
        if store is not None:
            store.set(STATE_KEY, state.to_dict())

    # ------------------------------------------------------------------ Airflow entry points

    def execute(self, context: Context) -> Any:
        task_id = self._task_id()
        check_output_path(self.output_path)
        if not self.deferrable:
            try:
                return super().execute(context)
            except _PokeFailure as carried:
                raise carried.error from None
            except KlingSensorTimeout:
                raise
            except AirflowSensorTimeout as err:  # the base sensor's own clock
                raise self._timeout_error() from err
        state = self._wait_state(context)
        hook = KlingHook(self.kling_conn_id)
        try:
            hook.settings.check_async_transport()
            event = poll(hook, state)  # one attempt: a throttle or transient error defers at once
        finally:
            hook.close()
        if event is not None:
            return self.execute_complete(context, event)
        push_pending_link(context)
        from airflow_provider_kling.triggers.kling import KlingVideoTrigger

        self.defer(
            trigger=KlingVideoTrigger(task_id, self.kling_conn_id, self.poke_interval, state.end_time),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + DEFER_GRACE_SECONDS),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check_output_path(self.output_path)
        state = self._wait_state(context)
        if state.remaining() <= 0:
            raise self._timeout_error()
        hook = KlingHook(self.kling_conn_id)
        try:
            event = poll(hook, state)
        finally:
            hook.close()
        self._save(context, state)
        if event is None:
            return False
        try:
            result = self.execute_complete(context, event)
        except KlingSensorTimeout:
            raise
        except Exception as err:
            raise _PokeFailure(err) from err
        return PokeReturnValue(is_done=True, xcom_value=result)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Turn the trigger's event into the result, or raise the matching Kling error (never retried
        for a failed generation: a sensor cannot make a new one)."""
        try:
            result = result_from_event(event, can_regenerate=False)
        except KlingTimeoutError as err:
            raise self._timeout_error(str(err)) from None
        self._result = deliver(
            context, result, output_path=self.output_path, kling_conn_id=self.kling_conn_id, outlets=self.outlets
        )
        return self._result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the stored video (else its URL); ``None`` without the OpenLineage provider."""
        return operator_lineage(*datasets((), self._result))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Back from the trigger: a timeout (ours or the deferral's) is a skip under ``soft_fail``;
        a failure is never skipped (the base sensor would skip any ``AirflowException``)."""
        try:
            return super(BaseSensorOperator, self).resume_execution(next_method, next_kwargs, context)
        except (KlingSensorTimeout, TaskDeferralTimeout) as err:
            timeout = err if isinstance(err, KlingSensorTimeout) else self._timeout_error()
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"Skipping on timeout (soft_fail): {timeout}") from err
            raise timeout from None
        except Exception as err:
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
            raise
