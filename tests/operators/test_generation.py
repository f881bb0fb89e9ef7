"""Operators and sensor through real Airflow (``dag.test()``, triggers inline) against the simulator."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.idempotency import base_business_id
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
FAST = {"retry_delay": timedelta(seconds=0)}


def make_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


def test_submit_then_deferrable_sensor(dags, sim):
    with make_dag("t_submit_sensor") as dag:
        submit = KlingSubmitOperator(task_id="submit", prompt="a lighthouse in a storm", duration="10")
        wait = KlingVideoSensor(
            task_id="wait",
            kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
            poke_interval=1,
            timeout=60,
            deferrable=True,
        )
        submit >> wait
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success", "wait": "success"}
    task_id = dags.xcom(run, "submit")
    assert task_id.startswith("video_")
    assert dags.xcom(run, "submit", "kling_task_id") == task_id
    business_id = dags.xcom(run, "submit", "client_business_id")
    request = KlingVideoRequest.from_kwargs(prompt="a lighthouse in a storm", duration=10)
    assert business_id == base_business_id(run.dag_id, run.run_id, "submit", -1, request_digest=request.digest())
    assert dags.xcom(run, "submit", "kling_request_digest") == request.digest()
    result = dags.xcom(run, "wait")
    assert result["id"] == task_id and result["status"] == "completed"
    assert result["video_url"].endswith(f"{task_id}.mp4")
    assert result["expires_at"].endswith("Z") and result["client_business_id"] == business_id
    assert dags.xcom(run, "wait", "kling_video_url") == result["video_url"]
    assert sim.stats()["tasks_created"] == 1


def test_sensor_in_poke_mode(dags, sim):
    hook = KlingHook()
    task = hook.submit_video(KlingSubmitOperator(task_id="x", prompt="p").build_request(), "kl_poke")
    with make_dag("t_poke") as dag:
        KlingVideoSensor(task_id="wait", kling_task_id=task.id, poke_interval=1, timeout=60, deferrable=False)
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "success"}
    assert dags.xcom(run, "wait")["id"] == task.id


@pytest.mark.parametrize("deferrable", [True, False])
def test_generate_operator(dags, sim, deferrable):
    with make_dag(f"t_generate_{deferrable}") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="a red kite",
            mode="pro",
            audio=True,
            poll_interval=1,
            timeout=60,
            deferrable=deferrable,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"}
    result = dags.xcom(run, "gen")
    assert result["status"] == "completed" and result["video_url"]
    assert dags.xcom(run, "gen", "kling_task_id") == result["id"]
    body = next(r for r in sim.requests() if r["method"] == "POST" and r["path"] == "/v1/videos/generations")["body"]
    assert (body["mode"], body["audio"], body["duration"]) == ("pro", True, 5)
    assert sim.stats()["tasks_created"] == 1


def test_templated_values_validated_after_render_before_any_request(dags, sim):
    with make_dag("t_bad_render") as dag:
        KlingSubmitOperator(
            task_id="submit", prompt="ok", duration="{{ params.d }}", params={"d": 7}, retries=2, **FAST
        )
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "failed"}
    assert dags.tries(run, "submit") == 1  # KlingValidationError is never retried
    assert sim.stats()["requests"]["total"] == 0


def test_rendered_duration_string_is_sent_as_int(dags, sim):
    with make_dag("t_good_render") as dag:
        KlingSubmitOperator(
            task_id="submit", prompt="{{ params.p }}", duration="{{ params.d }}", params={"d": 10, "p": "a cat"}
        )
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success"}
    body = sim.requests()[-1]["body"]
    assert body["duration"] == 10 and body["prompt"] == "a cat"


def test_content_policy_fails_without_retry(dags, sim):
    with make_dag("t_policy") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="x [sim:content_policy]",
            poll_interval=1,
            timeout=60,
            deferrable=True,
            retries=3,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"}
    assert dags.tries(run, "gen") == 1
    assert sim.stats()["tasks_created"] == 1


def test_policy_message_with_generic_code_is_not_retried(dags, sim):
    with make_dag("t_policy_msg") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="x [sim:policy_message]",
            poll_interval=1,
            timeout=60,
            deferrable=True,
            retries=3,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"} and dags.tries(run, "gen") == 1
    assert sim.stats()["tasks_created"] == 1


def test_sensor_never_retries_a_failed_generation(dags, sim):
    with make_dag("t_sensor_failed") as dag:
        submit = KlingSubmitOperator(task_id="submit", prompt="x [sim:generation_failed]")
        wait = KlingVideoSensor(
            task_id="wait",
            kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
            poke_interval=1,
            timeout=60,
            deferrable=True,
            retries=3,
            **FAST,
        )
        submit >> wait
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success", "wait": "failed"}
    assert dags.tries(run, "wait") == 1
    assert sim.stats()["tasks_created"] == 1


def test_timeout_is_retryable_and_bounded(dags, sim):
    with make_dag("t_timeout") as dag:
        KlingGenerateVideoOperator(
            task_id="gen", prompt="x [sim:never_finish]", poll_interval=1, timeout=2, deferrable=True, retries=1, **FAST
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"}
    assert dags.tries(run, "gen") == 2
    assert sim.stats()["tasks_created"] == 1  # the retry resumed the same generation


def test_sensor_already_finished_does_not_defer(dags, sim):
    hook = KlingHook()
    task = hook.submit_video(KlingSubmitOperator(task_id="x", prompt="p [sim:total=0.2]").build_request(), "kl_fast")
    import time

    time.sleep(0.5)
    with make_dag("t_no_defer") as dag:
        KlingVideoSensor(task_id="wait", kling_task_id=task.id, poke_interval=1, timeout=60, deferrable=True)
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "success"}
    assert sim.stats()["requests"]["status"] == 1


def test_sensor_defers_at_once_on_429(dags, sim):
    hook = KlingHook()
    task = hook.submit_video(KlingSubmitOperator(task_id="x", prompt="p").build_request(), "kl_sensor_429")
    sim.add_fault(fault="rate_limit", endpoint="status", count=1, retry_after=1)
    with make_dag("t_sensor_429") as dag:
        KlingVideoSensor(task_id="wait", kling_task_id=task.id, poke_interval=1, timeout=60, deferrable=True)
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "success"}
