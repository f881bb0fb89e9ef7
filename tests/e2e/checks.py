"""What the end-to-end tests read from a stack and the simulator: requests, trigger rows, the key check."""

from __future__ import annotations

import json

from airflow_provider_kling.simulator.state import key_hash
from tests.conftest import TEST_API_KEY

TRIGGER_CLASSPATH = "airflow_provider_kling.triggers.kling.KlingVideoTrigger"
CREATE_PATH = "/v1/videos/generations"


def creates(sim) -> int:
    """Create requests that reached the simulator (replays included: any POST counts)."""
    return sum(1 for r in sim.requests() if r["method"] == "POST" and r["path"].rstrip("/") == CREATE_PATH)


def polls(sim, kling_task_id: str) -> int:
    """Status requests for one generation (by task id)."""
    return sum(1 for r in sim.requests() if r["method"] == "GET" and r["path"].endswith(f"/{kling_task_id}"))


def plain(kwargs):
    """Trigger kwargs as stored (Airflow serde form: ``{"__var": {...}, "__type": "dict"}``) as plain values."""
    if isinstance(kwargs, dict) and "__var" in kwargs:
        inner = kwargs["__var"]
        return {k: plain(v) for k, v in inner.items()} if isinstance(inner, dict) else inner
    return kwargs


def trigger_row(stack, dag_id: str, run_id: str, task_id: str) -> dict | None:
    """The ``trigger`` row the task instance is deferred on (``None`` when it is not deferred)."""
    ti = stack.task_instance(dag_id, run_id, task_id)
    if not ti or ti.get("trigger_id") is None:
        return None
    rows = [r for r in stack.trigger_rows() if r["id"] == ti["trigger_id"]]
    return rows[0] if rows else None


def assert_key_never_stored(stack, sim, trigger_rows=()) -> None:
    """The API key reached the simulator from the stack, yet no trigger row, XCom, rendered field, DB page
    or log file of the stack holds it."""
    # Not vacuous: the stack's connection carries the key, and the simulator saw requests made with it.
    assert TEST_API_KEY in stack.env["AIRFLOW_CONN_KLING_DEFAULT"]
    assert key_hash(TEST_API_KEY) in {r["key_hash"] for r in sim.requests()}

    for row in trigger_rows:  # captured while deferred: rows are deleted once the trigger fires
        assert TEST_API_KEY not in row["kwargs_plain"], row
        assert TEST_API_KEY not in row["kwargs_stored"], row
    xcoms = stack.query("SELECT dag_id, run_id, task_id, key, value FROM xcom")
    assert xcoms
    assert TEST_API_KEY not in json.dumps(xcoms, default=str)
    rendered = stack.query("SELECT dag_id, task_id, run_id, rendered_fields FROM rendered_task_instance_fields")
    assert rendered
    assert TEST_API_KEY not in json.dumps(rendered, default=str)
    for table in ("task_instance", "task_instance_history", "dag_run", "trigger", "log"):
        assert TEST_API_KEY not in json.dumps(stack.query(f"SELECT * FROM {table}"), default=str), table
    # Every page of the metadata DB, freed ones included (a deleted trigger row would still show).
    key = TEST_API_KEY.encode()
    for suffix in ("", "-wal", "-journal"):
        path = stack.db_path.with_name(stack.db_path.name + suffix)
        if path.exists():
            assert key not in path.read_bytes(), path
    logs = stack.all_logs_text()
    assert all(task["id"] in logs for task in sim.stats()["tasks"])  # the logs are the ones of this test's run
    assert TEST_API_KEY not in logs
