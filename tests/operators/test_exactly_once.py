"""Exactly one paid generation per task instance: lost responses, 5xx, crashes, regenerations."""

from __future__ import annotations

import time
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_kling.exceptions import KlingTaskFailedError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.idempotency import base_business_id, id_chain, regeneration_id, submit_once
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from tests.conftest import wait_terminal

START = pendulum.datetime(2026, 1, 1, tz="UTC")
FAST = {"retry_delay": timedelta(seconds=0)}


class CrashAfterSubmitMixin:
    """Fault injection: on the listed tries the worker dies after the generation was paid for and
    before anything reached XCom (the submit itself is the real one, against the simulator)."""

    crash_on_tries: tuple[int, ...] = (1,)

    def submit(self, context, hook):
        ti = context["ti"]
        if ti.try_number in self.crash_on_tries:
            request = self.build_request()
            base = base_business_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, request_digest=request.digest())
            submit_once(hook, request, base, ti.try_number)
            raise RuntimeError("worker crashed after submit")
        return super().submit(context, hook)


class CrashAfterSubmit(CrashAfterSubmitMixin, KlingSubmitOperator):
    pass


class CrashAfterRegeneration(CrashAfterSubmitMixin, KlingGenerateVideoOperator):
    crash_on_tries = (2,)


def digest(prompt: str) -> str:
    return KlingVideoRequest.from_kwargs(prompt=prompt).digest()


def dag_with(op_factory, dag_id):
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        op_factory()
    return dag


def test_lost_create_response(dags, sim):
    sim.add_fault(fault="drop_after_create", endpoint="create", count=1)
    dag = dag_with(lambda: KlingSubmitOperator(task_id="submit", prompt="p"), "x_lost")
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success"}
    assert sim.stats()["tasks_created"] == 1 and sim.stats()["charged"] == 1


def test_500_on_create(dags, sim):
    sim.add_fault(fault="server_error", endpoint="create", count=2)
    dag = dag_with(lambda: KlingSubmitOperator(task_id="submit", prompt="p"), "x_500")
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success"}
    assert sim.stats()["tasks_created"] == 1


def test_crash_between_submit_and_xcom_push_resumes(dags, sim):
    dag = dag_with(lambda: CrashAfterSubmit(task_id="submit", prompt="p", retries=1, **FAST), "x_crash")
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success"} and dags.tries(run, "submit") == 2
    assert sim.stats()["tasks_created"] == 1
    assert dags.xcom(run, "submit", "client_business_id") == base_business_id(
        run.dag_id, run.run_id, "submit", -1, request_digest=digest("p")
    )


def test_retryable_failure_makes_exactly_one_new_generation(dags, sim):
    dag = dag_with(
        lambda: KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p [sim:fail_first=1]",
            poll_interval=1,
            timeout=60,
            deferrable=True,
            retries=2,
            **FAST,
        ),
        "x_regen",
    )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"} and dags.tries(run, "gen") == 2
    base = base_business_id(run.dag_id, run.run_id, "gen", -1, request_digest=digest("p [sim:fail_first=1]"))
    assert dags.xcom(run, "gen", "client_business_id") == regeneration_id(base, 2)
    assert sim.stats()["tasks_created"] == 2


def test_crash_after_regeneration_never_pays_a_third_time(dags, sim):
    # Try 1: generation fails (retryable). Try 2: regenerates under _r2, then the worker dies.
    # Try 3: adopts _r2 and waits for it. Two generations in all, never three.
    dag = dag_with(
        lambda: CrashAfterRegeneration(
            task_id="gen",
            prompt="p [sim:fail_first=1]",
            poll_interval=1,
            timeout=60,
            deferrable=True,
            retries=3,
            **FAST,
        ),
        "x_regen_crash",
    )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"} and dags.tries(run, "gen") == 3
    base = base_business_id(run.dag_id, run.run_id, "gen", -1, request_digest=digest("p [sim:fail_first=1]"))
    assert dags.xcom(run, "gen", "client_business_id") == regeneration_id(base, 2)
    assert sim.stats()["tasks_created"] == 2


def test_own_failed_regeneration_fails_the_try_without_paying(sim):
    hook = KlingHook()
    request = KlingVideoRequest.from_kwargs(prompt="p [sim:fail_first=2]")
    base = "kl_" + "a" * 40
    first = submit_once(hook, request, base, 1)
    wait_terminal(hook, base)
    second = submit_once(hook, request, base, 2)
    wait_terminal(hook, second.client_business_id)
    with pytest.raises(KlingTaskFailedError, match="not paying again"):
        submit_once(hook, request, base, 2)
    assert sim.stats()["tasks_created"] == 2
    assert first.client_business_id == base


def test_expired_completed_generation_is_generated_again(sim, caplog):
    hook = KlingHook()
    request = KlingVideoRequest.from_kwargs(prompt="p [sim:total=0.3] [sim:expire=1]")
    base = "kl_" + "b" * 40
    submit_once(hook, request, base, 1)
    time.sleep(1.6)
    again = submit_once(hook, request, base, 2)
    assert not again.adopted and again.client_business_id == regeneration_id(base, 2)
    assert "expired" in caplog.text
    assert sim.stats()["tasks_created"] == 2


def test_missing_base_is_submitted_under_base_even_on_a_later_try(sim):
    hook = KlingHook()
    request = KlingVideoRequest.from_kwargs(prompt="p")
    base = "kl_" + "c" * 40
    sub = submit_once(hook, request, base, 3)
    assert sub.client_business_id == base and not sub.adopted


def test_ids_are_deterministic_and_url_safe():
    base = base_business_id("dag", "manual__2026-01-01T00:00:00+00:00", "task", 3)
    assert base == base_business_id("dag", "manual__2026-01-01T00:00:00+00:00", "task", 3)
    assert base != base_business_id("dag", "manual__2026-01-01T00:00:00+00:00", "task", 4)
    assert len(base) == 43 and base.startswith("kl_")
    assert id_chain(base, 3) == [base, base + "_r2", base + "_r3"]
    assert all(c.isalnum() or c in "_-" for c in regeneration_id(base, 99)) and len(regeneration_id(base, 99)) <= 64
