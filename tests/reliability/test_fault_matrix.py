"""The fault matrix, each row through real Airflow (``dag.test()``) against the simulator."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor
from tests.conftest import connection_uri
from tests.operators.test_exactly_once import CrashAfterRegeneration, CrashAfterSubmit
from tests.reliability.matrix import CASES, DOC, OTHER_TESTS, REPO, Case, render

START = pendulum.datetime(2026, 1, 1, tz="UTC")
DUPLICATES: dict[str, int] = {}


def build(case: Case) -> DAG:
    options = {"retry_delay": timedelta(seconds=0), **case.options}
    wait = {"timeout": options.pop("timeout", 60), "deferrable": True}
    with DAG(f"matrix_{case.name}", schedule=None, start_date=START, catchup=False) as dag:
        if case.operator == "submit_sensor":
            submit = KlingSubmitOperator(task_id="submit", prompt=case.prompt)
            submit >> KlingVideoSensor(
                task_id="task",
                kling_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
                poke_interval=1,
                **wait,
                **options,
            )
        elif case.operator == "crash_after_submit":
            CrashAfterSubmit(task_id="task", prompt=case.prompt, **options)
        else:
            cls = CrashAfterRegeneration if case.operator == "crash_after_regeneration" else KlingGenerateVideoOperator
            cls(task_id="task", prompt=case.prompt, poll_interval=1, **wait, **options)
    return dag


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(dags, sim, monkeypatch, capfd, case):
    if case.conn_extra:
        monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(sim.base_url, **case.conn_extra))
    for spec in case.faults:
        sim.add_fault(**spec)
    run = dags.run(build(case))
    assert dags.states(run)["task"] == case.state
    assert dags.tries(run, "task") == case.tries
    stats = sim.stats()
    assert stats["tasks_created"] == case.generations
    if case.error:
        out, err = capfd.readouterr()
        assert case.error in out + err
    if case.state == "success" and case.operator != "crash_after_submit":
        result = dags.xcom(run, "task")
        assert result["status"] == "completed" and result["video_url"]
    failed = sum(1 for t in stats["tasks"] if t["status"] == "failed")
    DUPLICATES[case.name] = max(0, stats["tasks_created"] - failed - 1)
    assert DUPLICATES[case.name] == 0


def test_no_duplicates_over_the_matrix():
    if set(DUPLICATES) != {c.name for c in CASES}:
        pytest.skip("only part of the matrix ran")
    assert sum(DUPLICATES.values()) == 0


def test_doc_matches_matrix():
    assert DOC.read_text() == render(), "docs/reliability.md is stale: uv run python -m tests.reliability.matrix"


@pytest.mark.parametrize("test_ref", [t for _, _, t in OTHER_TESTS])
def test_referenced_tests_exist(test_ref):
    path, _, name = test_ref.partition("::")
    source = (REPO / path).read_text()
    assert not name or f"def {name}(" in source
