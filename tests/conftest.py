"""Test set-up: an isolated Airflow home and the local simulator, before anything imports airflow."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = tempfile.mkdtemp(prefix="kling-test-airflow-")
atexit.register(shutil.rmtree, AIRFLOW_HOME, True)
os.environ.update(
    {
        "AIRFLOW_HOME": AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
for name in list(os.environ):
    if name.startswith("AIRFLOW_CONN_"):
        del os.environ[name]

import pytest  # noqa: E402
from airflow.listeners import hookimpl  # noqa: E402

from airflow_provider_kling.ratelimit import reset_budgets  # noqa: E402
from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer  # noqa: E402

#: A key that is easy to find in any output it must never reach.
TEST_API_KEY = "sk-kling-test-SECRET-4f1d9c2b7a"


def connection_uri(base_url: str, key: str = TEST_API_KEY, **extra: object) -> str:
    return json.dumps({"conn_type": "kling", "host": base_url, "password": key, "extra": extra})


#: The simulator's settings at the start of every test using ``sim``: the defaults, with fast timings.
FRESH_CONFIG = {
    name: value
    for name, value in vars(SimulatorConfig(queued_seconds=0.3, total_seconds=1.5)).items()
    if name != "faults"
}


@pytest.fixture(scope="session")
def simulator():
    """The local ToAPIs simulator on a free loopback port (fast timings)."""
    server = SimulatorServer(SimulatorConfig(queued_seconds=0.3, total_seconds=1.5), port=0)
    server.start()
    os.environ["AIRFLOW_CONN_KLING_DEFAULT"] = connection_uri(server.base_url)
    yield server
    server.stop()


@pytest.fixture
def sim(simulator, monkeypatch):
    """The simulator, reset before the test, with ``kling_default`` pointing at it."""
    simulator.reset()
    simulator.set_config(**FRESH_CONFIG)  # whatever the previous test changed (latency, quota, workers...)
    reset_budgets()
    monkeypatch.setenv("AIRFLOW_CONN_KLING_DEFAULT", connection_uri(simulator.base_url))
    return simulator


@pytest.fixture(scope="session")
def airflow_db():
    """The Airflow metadata database, created once per session."""
    from airflow.utils.db import initdb

    initdb()


def dagbag_class():
    """``DagBag``: in ``airflow.dag_processing.dagbag`` from Airflow 3.2, ``airflow.models.dagbag`` before."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag
    return DagBag


def _sync_to_db(dag) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    bag = dagbag_class()(collect_dags=False)
    try:
        from airflow.dag_processing.dagbag import sync_bag_to_db
    except ImportError:
        try:  # Airflow 3.1
            from airflow.models.dagbag import sync_bag_to_db
        except ImportError:  # Airflow 3.0: only a parsed file sets relative_fileloc, which serialization needs
            dag.relative_fileloc = dag.relative_fileloc or dag.fileloc
            bag.bag_dag(dag)
            bag.sync_to_db("dags-folder", None)
            return
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


class _FailureListener:
    """An Airflow listener that records the exception of every failed try (task id, class name)."""

    def __init__(self, into: list[tuple[str, str]]) -> None:
        self.into = into

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error) -> None:
        name = type(error).__name__ if isinstance(error, BaseException) else str(error)
        self.into.append((task_instance.task_id, name))


class DagRunner:
    """Runs a DAG through ``dag.test()`` (real Airflow, triggers inline) and reads what it left.

    Failures are recorded through an Airflow listener on the manager the task runner reports to,
    not through ``on_failure_callback``: Airflow 3.0's ``dag.test()`` never runs the callbacks of
    task-SDK operators (its ``handle_failure`` cannot ``unmap`` them).
    """

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def run(self, dag, **kwargs):
        from airflow.sdk.execution_time import task_runner

        _sync_to_db(dag)
        if not hasattr(dag, "test"):  # Airflow 3.0: only the scheduler's DAG has test(), as in `airflow dags test`
            from airflow.models.dag import DAG
            from airflow.sdk.definitions._internal.expandinput import EXPAND_INPUT_EMPTY

            dag = DAG.from_sdk_dag(dag)
            for mapped in dag.tasks:  # from_sdk_dag deep-copies tasks, and with them this identity-checked sentinel
                if getattr(mapped, "expand_input", None) == EXPAND_INPUT_EMPTY:
                    mapped.expand_input = EXPAND_INPUT_EMPTY
        self.failed = []
        listener = _FailureListener(self.failed)
        manager = task_runner.get_listener_manager()
        manager.add_listener(listener)
        try:
            return dag.test(**kwargs)
        finally:
            manager.pm.unregister(listener)

    def failures(self, task_id: str | None = None) -> list[str]:
        """Exception class names of the failed tries of the last run (of ``task_id`` if given)."""
        return [name for task, name in self.failed if task_id is None or task == task_id]

    def states(self, run) -> dict[str, str]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
            return {
                (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(
                    getattr(ti.state, "value", ti.state)
                )
                for ti in rows
            }

    def tries(self, run, task_id: str) -> int:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            return (
                session.query(TaskInstance)
                .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id)
                .one()
                .try_number
            )

    def xcom(self, run, task_id: str, key: str = "return_value", map_index: int = -1):
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key=key, map_index=map_index)
                .one_or_none()
            )
            return None if row is None else XComModel.deserialize_value(row)


@pytest.fixture
def dags(airflow_db, sim, monkeypatch) -> DagRunner:
    """Run DAGs through real Airflow (``dag.test()``) against a fresh simulator."""
    monkeypatch.setenv("KLING_EXAMPLE_POLL_INTERVAL", "1")
    return DagRunner()


def submit_task(prompt: str = "a heron at dawn", business_id: str = "kl_test", **fields):
    """Create a generation on the simulator with the real sync hook; return the KlingTask."""
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.models import KlingVideoRequest

    hook = KlingHook()
    try:
        return hook.submit_video(KlingVideoRequest.from_kwargs(prompt=prompt, **fields), business_id)
    finally:
        hook.close()


def wait_terminal(hook, task_or_business_id: str, timeout: float = 10.0):
    """Poll until the task is completed or failed (bounded)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        task = hook.get_task(task_or_business_id)
        if task.is_terminal:
            return task
        time.sleep(0.2)
    raise AssertionError(f"{task_or_business_id} did not finish within {timeout} s")
