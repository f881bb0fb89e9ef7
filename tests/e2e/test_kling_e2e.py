"""The provider on real Airflow 3 processes: api-server, scheduler, dag-processor, triggerer.

LocalExecutor with ONE worker slot and SQLite; the simulator answers on loopback.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import TEST_API_KEY

pytestmark = pytest.mark.e2e


def creates(sim) -> int:
    return sum(1 for r in sim.requests() if r["method"] == "POST" and r["path"] == "/v1/videos/generations")


def plain(kwargs):
    """Trigger kwargs as stored (Airflow serde form: ``{"__var": {...}, "__type": "dict"}``) as a plain dict."""
    if isinstance(kwargs, dict) and "__var" in kwargs:
        return (
            {k: plain(v) for k, v in kwargs["__var"].items()} if isinstance(kwargs["__var"], dict) else kwargs["__var"]
        )
    return kwargs


def assert_no_key(stack, dag_id, run_id, task_ids):
    xcoms = [stack.xcom(dag_id, run_id, t) for t in task_ids]
    assert TEST_API_KEY not in json.dumps(xcoms, default=str)
    assert TEST_API_KEY not in stack.all_logs_text()


def test_two_generations_share_one_worker_slot(airflow_stack, sim):
    stack = airflow_stack
    stack.ensure_running()
    assert stack.parallelism == 1
    run_id = stack.trigger_dag("e2e_kling_two_waits")

    def both_deferred():
        states = stack.task_states("e2e_kling_two_waits", run_id)
        return states if states.get("generate") == "deferred" and states.get("wait") == "deferred" else None

    stack.wait_for(both_deferred, timeout=90, interval=0.2, what="both waits deferred at the same time")
    rows = stack.trigger_rows()
    assert {r["classpath"] for r in rows} == {"airflow_provider_kling.triggers.kling.KlingVideoTrigger"}
    assert len(rows) == 2
    for row in rows:
        kwargs = plain(row["kwargs"])
        assert set(kwargs) >= {"kling_task_id", "kling_conn_id", "poll_interval", "end_time"}
        assert TEST_API_KEY not in json.dumps(row, default=str)
    assert not [p for p in stack.pids() if p["role"] == "task"], "a task held the worker slot while deferred"

    assert stack.wait_for_dag_run("e2e_kling_two_waits", run_id, timeout=120) == "success", stack.diagnostics()
    for task_id in ("generate", "wait"):
        result = stack.xcom("e2e_kling_two_waits", run_id, task_id)
        assert result["status"] == "completed" and result["video_url"]
    assert sim.stats()["tasks_created"] == 2
    assert_no_key(stack, "e2e_kling_two_waits", run_id, ["generate", "submit", "wait"])


def test_worker_killed_after_submit_is_resumed(airflow_stack, sim):
    stack = airflow_stack
    stack.ensure_running()
    run_id = stack.trigger_dag("e2e_kling_worker_kill")
    stack.wait_for(lambda: sim.stats()["tasks_created"] == 1, timeout=90, interval=0.2, what="generation paid")
    stack.wait_for_task_state("e2e_kling_worker_kill", run_id, "generate", ("running",), timeout=30)
    stack.kill_task("e2e_kling_worker_kill", run_id, "generate", target="task")

    assert stack.wait_for_dag_run("e2e_kling_worker_kill", run_id, timeout=120) == "success", stack.diagnostics()
    ti = stack.task_instance("e2e_kling_worker_kill", run_id, "generate")
    assert ti["try_number"] == 2
    assert sim.stats()["tasks_created"] == 1  # the retry adopted the generation it had paid for
    assert creates(sim) == 1
    result = stack.xcom("e2e_kling_worker_kill", run_id, "generate")
    assert result["status"] == "completed"
    assert "Resuming Kling task" in stack.task_log("e2e_kling_worker_kill", run_id, "generate", try_number=2)


def test_triggerer_killed_mid_wait_resumes(airflow_stack, sim):
    stack = airflow_stack
    stack.ensure_running()
    dag_id = "e2e_kling_triggerer_kill"
    run_id = stack.trigger_dag(dag_id)
    stack.wait_for_task_state(dag_id, run_id, "generate", ("deferred",), timeout=90)
    stack.wait_for(lambda: stack.trigger_rows() or None, timeout=30, what="trigger row")
    (before,) = stack.trigger_rows()
    stack.kill("triggerer")
    assert stack.task_states(dag_id, run_id)["generate"] == "deferred"
    stack.start_component("triggerer")

    assert stack.wait_for_dag_run(dag_id, run_id, timeout=150) == "success", stack.diagnostics()
    assert plain(before["kwargs"])["end_time"] > 0
    result = stack.xcom(dag_id, run_id, "generate")
    assert result["id"] == plain(before["kwargs"])["kling_task_id"]  # the same generation, resumed
    assert sim.stats()["tasks_created"] == 1 and creates(sim) == 1
    ti = stack.task_instance(dag_id, run_id, "generate")
    assert ti["try_number"] == 1
    assert TEST_API_KEY not in json.dumps(before, default=str)


def test_restarted_trigger_keeps_its_deadline(airflow_stack, sim):
    """The trigger row a new triggerer picks up carries the same absolute end_time."""
    stack = airflow_stack
    stack.ensure_running()
    dag_id = "e2e_kling_triggerer_kill"
    run_id = stack.trigger_dag(dag_id)
    stack.wait_for_task_state(dag_id, run_id, "generate", ("deferred",), timeout=90)
    stack.wait_for(lambda: stack.trigger_rows() or None, timeout=30, what="trigger row")
    (before,) = stack.trigger_rows()
    stack.restart("triggerer", grace=3)
    stack.wait_for(
        lambda: [r for r in stack.trigger_rows() if r["triggerer_id"]] or None,
        timeout=60,
        what="trigger picked up again",
    )
    (after,) = stack.trigger_rows()
    assert after["id"] == before["id"] and after["kwargs"] == before["kwargs"]
    assert stack.wait_for_dag_run(dag_id, run_id, timeout=150) == "success", stack.diagnostics()
    assert sim.stats()["tasks_created"] == 1
