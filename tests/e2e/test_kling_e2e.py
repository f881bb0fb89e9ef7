"""The provider on real Airflow 3 processes: api-server, scheduler, dag-processor, triggerer.

LocalExecutor with ONE worker slot and SQLite; every component talks to the session's simulator on
loopback (``tests/e2e/conftest.py``), which the ``sim`` fixture resets before each test. Every wait is
bounded; nothing asserts on timings, only on states, counts and stored values.
"""

from __future__ import annotations

import contextlib
import urllib.parse

import pytest

from tests.e2e.checks import TRIGGER_CLASSPATH, assert_key_never_stored, creates, plain, polls, trigger_row

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _no_leftover_runs(airflow_stack):
    """After each test, fail any run it left unfinished (a failed test must not hold the worker slot or
    poll generations the next test's reset simulator no longer knows)."""
    yield
    for dag_id, run_id in airflow_stack.query(
        "SELECT dag_id, run_id FROM dag_run WHERE state IN ('queued', 'running')"
    ):
        with contextlib.suppress(Exception):
            airflow_stack.api(
                "PATCH",
                f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}",
                {"state": "failed"},
            )


# ------------------------------------------------------------------ tests


def test_two_generations_share_one_worker_slot(airflow_stack, sim):
    """Two ~15 s generations with parallelism=1: both wait deferred at the same time (no worker slot held),
    then both succeed with their result dicts, and exactly two generations were paid."""
    stack = airflow_stack
    stack.ensure_running()
    assert stack.parallelism == 1 and stack.env["AIRFLOW__CORE__PARALLELISM"] == "1"
    dag_id = "e2e_kling_two_waits"
    run_id = stack.trigger_dag(dag_id)

    def both_deferred():
        states = stack.task_states(dag_id, run_id)
        return states if states.get("generate") == "deferred" and states.get("wait") == "deferred" else None

    def task_runners():
        return [p for p in stack.pids() if p["role"] == "task"]

    # Both deferred and no task process alive (the runner exits a few ms after its TI turns deferred), at once:
    # neither wait holds the one worker slot.
    stack.wait_for(
        lambda: both_deferred() and not task_runners(),
        timeout=90,
        interval=0.2,
        what="both waits deferred at the same time, no task running",
    )
    rows = [trigger_row(stack, dag_id, run_id, t) for t in ("generate", "wait")]
    # Both still deferred after reading the rows: the snapshot is of a moment when both waited.
    assert both_deferred(), stack.task_states(dag_id, run_id)
    assert all(rows), rows
    assert rows[0]["id"] != rows[1]["id"]
    assert {r["classpath"] for r in rows} == {TRIGGER_CLASSPATH}
    generations = {t["id"]: t for t in sim.stats()["tasks"]}
    assert len(generations) == 2
    for row in rows:
        kwargs = plain(row["kwargs"])
        assert set(kwargs) >= {"kling_task_id", "kling_conn_id", "poll_interval", "end_time"}
        assert kwargs["kling_task_id"] in generations
        assert generations[kwargs["kling_task_id"]]["status"] != "completed"  # really waiting, not done
    assert {plain(r["kwargs"])["kling_task_id"] for r in rows} == set(generations)

    assert stack.wait_for_dag_run(dag_id, run_id, timeout=120) == "success", stack.diagnostics()
    assert stack.task_states(dag_id, run_id) == {"generate": "success", "submit": "success", "wait": "success"}
    results = {t: stack.xcom(dag_id, run_id, t) for t in ("generate", "wait")}
    for result in results.values():
        assert result["status"] == "completed", result
        assert result["video_url"] and result["id"] in generations, result
    assert results["generate"]["id"] == stack.xcom(dag_id, run_id, "generate", "kling_task_id")
    # the sensor waited for what submit made
    assert (
        results["wait"]["id"]
        == stack.xcom(dag_id, run_id, "submit")
        == stack.xcom(dag_id, run_id, "submit", "kling_task_id")
    )
    assert results["generate"]["id"] != results["wait"]["id"]
    stats = sim.stats()
    assert stats["tasks_created"] == 2 and creates(sim) == 2
    assert_key_never_stored(stack, sim, rows)


def test_worker_killed_after_submit_is_resumed(airflow_stack, sim):
    """SIGKILL of the task runner right after the generation was paid: Airflow retries the task, and try 2
    adopts the same generation (one create request in all) and succeeds."""
    stack = airflow_stack
    stack.ensure_running()
    dag_id = "e2e_kling_worker_kill"
    run_id = stack.trigger_dag(dag_id)
    stack.wait_for(lambda: sim.stats()["tasks_created"] == 1, timeout=90, interval=0.1, what="generation paid")
    stack.wait_for_task_state(dag_id, run_id, "generate", ("running",), timeout=30)
    (generation,) = sim.stats()["tasks"]
    stack.kill_task(dag_id, run_id, "generate", target="task")
    assert generation["status"] != "completed"  # killed mid-generation, not after it

    assert stack.wait_for_dag_run(dag_id, run_id, timeout=120) == "success", stack.diagnostics()
    ti = stack.task_instance(dag_id, run_id, "generate")
    assert ti["state"] == "success" and ti["try_number"] == 2
    history = stack.query(
        "SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (dag_id, run_id, "generate"),
    )
    assert [tuple(h) for h in history] == [(1, "failed")], history  # try 1 died, and Airflow retried it

    stats = sim.stats()
    assert stats["tasks_created"] == 1 and creates(sim) == 1  # the retry adopted the generation it had paid for
    result = stack.xcom(dag_id, run_id, "generate")
    assert result["status"] == "completed" and result["id"] == generation["id"]
    assert result["client_business_id"] == generation["client_business_id"]
    assert stack.xcom(dag_id, run_id, "generate", "kling_task_id") == generation["id"]
    try1 = stack.task_log(dag_id, run_id, "generate", try_number=1)
    try2 = stack.task_log(dag_id, run_id, "generate", try_number=2)
    assert generation["id"] in try1 and "Resuming Kling task" not in try1  # try 1 paid...
    assert f"Resuming Kling task {generation['id']}" in try2  # ...try 2 adopted it
    assert_key_never_stored(stack, sim)


def test_triggerer_killed_mid_wait_resumes(airflow_stack, sim):
    """SIGKILL of the triggerer (and its trigger runner) while a ~25 s generation is awaited, then a new
    triggerer: it takes over the same trigger row with the same kwargs (same generation, same absolute
    deadline), polls on, and the task succeeds in its first try with no second create request."""
    stack = airflow_stack
    stack.ensure_running()
    dag_id = "e2e_kling_triggerer_kill"
    run_id = stack.trigger_dag(dag_id)
    stack.wait_for_task_state(dag_id, run_id, "generate", ("deferred",), timeout=90)
    before = stack.wait_for(
        lambda: (r := trigger_row(stack, dag_id, run_id, "generate")) and r["triggerer_id"] and r,
        timeout=30,
        interval=0.2,
        what="trigger row assigned to the triggerer",
    )
    kwargs_before = plain(before["kwargs"])
    kling_task_id = kwargs_before["kling_task_id"]
    assert kwargs_before["end_time"] > 0
    stack.wait_for(lambda: polls(sim, kling_task_id) >= 1, timeout=30, interval=0.2, what="the trigger polling")

    stack.kill("triggerer")
    (generation,) = sim.stats()["tasks"]
    assert generation["id"] == kling_task_id and generation["status"] != "completed"  # killed mid-wait
    assert stack.task_states(dag_id, run_id)["generate"] == "deferred"
    polls_at_kill = polls(sim, kling_task_id)
    scheduler_deadline = stack.task_instance(dag_id, run_id, "generate")["trigger_timeout"]
    assert scheduler_deadline  # defer(timeout=...): Airflow's own backstop deadline
    stack.start_component("triggerer")

    after = stack.wait_for(
        lambda: (
            (r := trigger_row(stack, dag_id, run_id, "generate"))
            and r["triggerer_id"] not in (None, before["triggerer_id"])
            and r
        ),
        timeout=60,
        interval=0.2,
        what="trigger taken over by the new triggerer",
    )
    assert after["id"] == before["id"]
    assert plain(after["kwargs"]) == kwargs_before  # same generation, same end_time: the deadline did not move
    assert stack.task_instance(dag_id, run_id, "generate")["trigger_timeout"] == scheduler_deadline

    assert stack.wait_for_dag_run(dag_id, run_id, timeout=150) == "success", stack.diagnostics()
    assert polls(sim, kling_task_id) > polls_at_kill  # the new triggerer polled the same generation
    result = stack.xcom(dag_id, run_id, "generate")
    assert result["status"] == "completed" and result["id"] == kling_task_id
    assert sim.stats()["tasks_created"] == 1 and creates(sim) == 1
    ti = stack.task_instance(dag_id, run_id, "generate")
    assert ti["state"] == "success" and ti["try_number"] == 1
    # The trigger ran on both triggerers (one log file per triggerer job); only the new one fired the event.
    folder = stack.task_log_dir(dag_id, run_id, "generate")
    old_log = folder / f"attempt=1.log.trigger.{before['triggerer_id']}.log"
    new_log = folder / f"attempt=1.log.trigger.{after['triggerer_id']}.log"
    assert "starting" in old_log.read_text() and "Trigger fired event" not in old_log.read_text()
    assert "starting" in new_log.read_text() and "Trigger fired event" in new_log.read_text()
    assert_key_never_stored(stack, sim, [before, after])


def test_restarted_trigger_keeps_its_deadline(airflow_stack, sim):
    """A graceful triggerer restart (SIGTERM): the new triggerer picks up the same row, same kwargs."""
    stack = airflow_stack
    stack.ensure_running()
    dag_id = "e2e_kling_triggerer_kill"
    run_id = stack.trigger_dag(dag_id)
    stack.wait_for_task_state(dag_id, run_id, "generate", ("deferred",), timeout=90)
    before = stack.wait_for(
        lambda: (r := trigger_row(stack, dag_id, run_id, "generate")) and r["triggerer_id"] and r,
        timeout=30,
        interval=0.2,
        what="trigger row assigned to the triggerer",
    )
    stack.restart("triggerer", grace=3)
    after = stack.wait_for(
        lambda: (
            (r := trigger_row(stack, dag_id, run_id, "generate"))
            and r["triggerer_id"] not in (None, before["triggerer_id"])
            and r
        ),
        timeout=60,
        interval=0.2,
        what="trigger taken over by the new triggerer",
    )
    assert after["id"] == before["id"] and plain(after["kwargs"]) == plain(before["kwargs"])
    assert stack.wait_for_dag_run(dag_id, run_id, timeout=150) == "success", stack.diagnostics()
    assert stack.task_instance(dag_id, run_id, "generate")["try_number"] == 1
    assert stack.xcom(dag_id, run_id, "generate")["id"] == plain(before["kwargs"])["kling_task_id"]
    assert sim.stats()["tasks_created"] == 1 and creates(sim) == 1
