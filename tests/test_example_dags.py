"""Every example DAG parses cleanly and runs to success through Airflow against the simulator."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from airflow_provider_kling.compat import AIRFLOW_V_3_1_PLUS

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"
DAG_FILES = sorted(p.stem for p in EXAMPLES.glob("example_kling_*.py"))
#: Scheduled on an asset another example produces: run after it, in its own test.
CONSUMERS = ("example_kling_publish_asset",)


@pytest.fixture
def example_env(dags, monkeypatch, tmp_path):
    monkeypatch.setenv("KLING_OUTPUT_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return tmp_path


def load(module_name: str):
    sys.modules.pop(module_name, None)
    return importlib.import_module(module_name).dag


def test_dagbag_has_no_import_errors(airflow_db, monkeypatch):
    from tests.conftest import dagbag_class

    monkeypatch.syspath_prepend(str(EXAMPLES))
    bag = dagbag_class()(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert set(DAG_FILES) == set(bag.dag_ids)
    assert len(DAG_FILES) == 10


#: Airflow 3.0's dag.test() runs tasks in its legacy in-process runner, where the length of a mapped
#: task's output (mapping over it) needs the task SDK supervisor it does not start (ImportError
#: SUPERVISOR_COMMS). Real 3.0 workers have it; 3.1+ dag.test() uses the task SDK runner.
_NEEDS_SDK_RUNNER = pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS, reason="Airflow 3.0 dag.test() cannot map over a mapped task's output"
)


@pytest.mark.parametrize(
    "module_name",
    [
        pytest.param(m, marks=_NEEDS_SDK_RUNNER) if m == "example_kling_taskflow" else m
        for m in DAG_FILES
        if m not in CONSUMERS
    ],
)
def test_example_dag_runs(example_env, dags, sim, module_name):
    dag = load(module_name)
    run = dags.run(dag)
    states = dags.states(run)
    assert states and set(states.values()) == {"success"}, states
    results = [dags.xcom(run, t) for t in ("wait", "generate", "generate_1080p", "generate_with_audio")]
    if module_name == "example_kling_batch":
        results = [dags.xcom(run, "generate", map_index=i) for i in range(3)]
    if module_name == "example_kling_taskflow":
        results = [dags.xcom(run, "generate", map_index=i) for i in range(2)]
        prompts = [sim.state.tasks[r["id"]].prompt for r in results]
        assert prompts[0].startswith("a red fox") and prompts[1].startswith("a snow owl")
        assert dags.xcom(run, "report") == [r["video_url"] for r in results]
    results = [r for r in results if isinstance(r, dict)]
    assert results and all(r["status"] == "completed" and r["video_url"] for r in results)
    assert sim.stats()["tasks_created"] == len(results)
    if module_name in ("example_kling_text_to_video", "example_kling_download"):
        saved = list(example_env.glob("*.mp4"))
        assert len(saved) == 1 and saved[0].read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize("root", ["memory", "file"])
def test_store_in_bucket_then_publish_on_the_asset(example_env, dags, sim, monkeypatch, root):
    """Producer stores the clip at a bucket URI with an asset event; the consumer reads the event's
    extra, passes the approval step (given automatically here) and publishes."""
    import hashlib

    import fsspec

    from airflow_provider_kling.simulator.files import VIDEO

    memory = fsspec.filesystem("memory")
    memory.store.clear()
    storage = "memory://kling-bucket/videos" if root == "memory" else (example_env / "bucket").as_uri()
    monkeypatch.setenv("KLING_STORAGE_ROOT", storage)
    producer = load("example_kling_store_asset")
    run = dags.run(producer)
    assert dags.states(run) == {"generate": "success"}
    result = dags.xcom(run, "generate")
    assert result["output_path"].startswith(storage + "/clips/") and result["output_path"].endswith(".mp4")
    if root == "memory":
        stored = memory.cat_file(result["output_path"][len("memory://") :])
    else:
        stored = (example_env / "bucket" / "clips" / result["output_path"].rsplit("/", 1)[-1]).read_bytes()
    assert stored == VIDEO.read_bytes() and result["sha256"] == hashlib.sha256(stored).hexdigest()
    stats = sim.stats()
    assert stats["tasks_created"] == 1 and stats["requests"]["upload"] == 1 and stats["requests"]["balance"] == 1

    if not AIRFLOW_V_3_1_PLUS:  # its legacy context keys triggering_asset_events by URI, not by Asset
        pytest.skip("Airflow 3.0 dag.test() cannot look asset events up by Asset; the producer side passed")
    consumer = load("example_kling_publish_asset")
    run = dags.run(consumer, mark_success_pattern="^approve$")
    expected = {"describe_clip": "success", "publish": "success"}
    from airflow.exceptions import AirflowOptionalProviderFeatureException

    try:
        import airflow.providers.standard.operators.hitl  # noqa: F401

        expected["approve"] = "success"  # the human step, approved through mark_success_pattern
    except (ImportError, AirflowOptionalProviderFeatureException):  # Airflow < 3.1 has no human-in-the-loop
        pass
    assert dags.states(run) == expected
    extra = dags.xcom(run, "describe_clip")
    assert extra["output_path"] == result["output_path"] and extra["size_bytes"] == len(stored)
    assert extra["kling_task_id"] == result["id"] and extra["mode"] == "std" and extra["duration"] == 5
    assert dags.xcom(run, "publish") == result["output_path"]
    memory.store.clear()


def test_airflow_dags_test_cli(sim, tmp_path):
    """The documented way to try an example: ``airflow dags test <dag_id>`` in a fresh process."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    home = tmp_path / "home"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_KLING_DEFAULT": os.environ["AIRFLOW_CONN_KLING_DEFAULT"],
            "KLING_EXAMPLE_POLL_INTERVAL": "1",
            "KLING_OUTPUT_DIR": str(tmp_path / "out"),
        }
    )
    # This interpreter, not the venv's `airflow` script, whose shebang may name another copy of the venv.
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    if not AIRFLOW_V_3_1_PLUS:  # Airflow 3.0's `dags test` finds the DAG file through the database only
        subprocess.run([*airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=300)
    done = subprocess.run(
        [*airflow, "dags", "test", "example_kling_text_to_video"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "state=success" in done.stdout + done.stderr
    assert (tmp_path / "out" / "text_to_video.mp4").read_bytes()[4:8] == b"ftyp"
