"""The API key never leaves the connection: not in logs, XCom, rendered fields, errors or reprs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor
from airflow_provider_kling.triggers.kling import KlingVideoTrigger
from tests.conftest import TEST_API_KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


def stored_text(run) -> str:
    """Everything Airflow stored for the run: XComs, rendered template fields, task instances."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    parts = []
    with create_session() as session:
        for model in (XComModel, RenderedTaskInstanceFields, TaskInstance):
            for row in session.query(model).filter_by(dag_id=run.dag_id, run_id=run.run_id).all():
                parts.append(
                    json.dumps({c.name: getattr(row, c.name, None) for c in model.__table__.columns}, default=str)
                )
    return "\n".join(parts)


def test_example_runs_store_and_log_no_key(dags, sim, capfd, monkeypatch, tmp_path):
    monkeypatch.setenv("KLING_OUTPUT_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    texts = []
    for name in ("example_kling_text_to_video", "example_kling_with_audio", "example_kling_first_last_frame"):
        sys.modules.pop(name, None)
        dag = __import__(name).dag
        run = dags.run(dag)
        assert set(dags.states(run).values()) == {"success"}
        texts.append(stored_text(run))
    out, err = capfd.readouterr()
    everything = "\n".join(texts) + out + err
    assert "kling_task_id" in everything and "video_url" in everything  # the check looks at real data
    assert TEST_API_KEY not in everything


def test_failing_runs_log_no_key(dags, sim, capfd):
    sim.set_config(api_keys=["sk-some-other-key"])  # our key is now rejected with 401
    with DAG("secret_failures", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
        KlingSubmitOperator(task_id="submit", prompt="p")
        KlingVideoSensor(task_id="wait", kling_task_id="video_x", poke_interval=1, timeout=10, deferrable=True)
        KlingGenerateVideoOperator(task_id="gen", prompt="p", poll_interval=1, timeout=10, deferrable=False)
    run = dags.run(dag)
    assert set(dags.states(run).values()) == {"failed"}
    out, err = capfd.readouterr()
    assert "authentication failed (401)" in out + err
    assert TEST_API_KEY not in out + err + stored_text(run)


def test_reprs_and_serialized_trigger_hold_no_key(sim):
    hook = KlingHook()
    settings = hook.settings
    trigger = KlingVideoTrigger("video_1", end_time=2e9)
    op = KlingGenerateVideoOperator(task_id="g", prompt="p")
    text = " ".join(
        [
            repr(hook),
            repr(settings),
            str(settings),
            repr(trigger),
            json.dumps(trigger.serialize()),
            repr(op),
            repr(vars(hook)),
        ]
    )
    assert settings.api_key == TEST_API_KEY  # the key is there, just never shown
    assert TEST_API_KEY not in text


def test_key_is_registered_with_the_secrets_masker(sim):
    try:
        from airflow.sdk.log import redact
    except ImportError:  # Airflow 3.0
        from airflow.sdk.execution_time.secrets_masker import redact

    KlingHook().settings  # noqa: B018 - reading the settings registers the key
    assert TEST_API_KEY not in str(redact(f"Authorization: Bearer {TEST_API_KEY}"))
