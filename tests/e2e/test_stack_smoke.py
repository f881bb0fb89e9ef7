"""Smoke test of the e2e harness: with ONE worker slot, two deferrable sensors are deferred at once."""

from __future__ import annotations

import time

import pytest

DAG_ID = "e2e_placeholder"
TASKS = ("wait_a", "wait_b")


@pytest.mark.e2e
def test_two_deferred_tasks_share_one_worker_slot(airflow_stack):
    stack = airflow_stack
    assert stack.parallelism == 1
    # LocalExecutor (fork) pre-spawns `parallelism` worker processes: exactly one slot
    workers = stack.wait_for(stack.worker_pids, timeout=30, interval=0.2, what="LocalExecutor worker")
    assert len(workers) == 1, stack.pids()

    t0 = time.monotonic()
    run_id = stack.trigger_dag(DAG_ID)

    def both_deferred():
        states = stack.task_states(DAG_ID, run_id)
        return states if sorted(states) == sorted(TASKS) and set(states.values()) == {"deferred"} else None

    stack.wait_for(both_deferred, timeout=60, interval=0.2, what="both sensors deferred at the same time")
    t_deferred = time.monotonic() - t0

    # the single worker is idle again: deferral released the slot; the waiting happens in the triggerer
    assert stack.worker_pids() == workers
    assert not [p for p in stack.pids() if p["role"] == "task"], stack.pids()
    triggers = stack.trigger_rows()
    assert len(triggers) == 2, triggers
    assert {t["classpath"] for t in triggers} == {"airflow.providers.standard.triggers.temporal.DateTimeTrigger"}

    assert stack.wait_for_dag_run(DAG_ID, run_id, timeout=90) == "success", stack.diagnostics()
    assert stack.task_states(DAG_ID, run_id) == dict.fromkeys(TASKS, "success")
    for task_id in TASKS:
        log = stack.task_log(DAG_ID, run_id, task_id, include_trigger=True)
        assert "Pausing task as DEFERRED" in log
        assert "trigger completed" in log
    print(
        f"\n[e2e] start timings {stack.timings}; both deferred after {t_deferred:.1f}s; "
        f"run done after {time.monotonic() - t0:.1f}s; memory {stack.memory()}"
    )
