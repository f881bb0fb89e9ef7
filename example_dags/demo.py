"""``make demo``: the example DAGs through Airflow, against the local simulator.

Starts the simulator on a free loopback port, points ``kling_default`` at it, runs
``example_kling_text_to_video`` with ``dag.test()`` (submit -> deferrable sensor -> download),
prints the task id and video URL, and leaves the MP4 under ``./output/``. Then runs
``example_kling_store_asset`` (first frame from a local file, clip stored at a ``file://`` bucket
URI under ``./output/bucket/``, ``kling_clips`` asset event) and prints the stored file and the
asset event's extra as the metadata database holds it. No key, no network.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "example_kling_text_to_video"
STORE_DAG_ID = "example_kling_store_asset"


def _prepare_environment(base_url: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix="kling-demo-airflow-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_KLING_DEFAULT": json.dumps(
                {"conn_type": "kling", "host": base_url, "password": "sk-demo-simulator-key"}
            ),
            "KLING_EXAMPLE_POLL_INTERVAL": "1",
            "KLING_OUTPUT_DIR": str(REPO / "output"),
            "KLING_STORAGE_ROOT": (REPO / "output" / "bucket").as_uri(),
        }
    )
    sys.path.insert(0, str(REPO / "example_dags"))
    return home


def main() -> int:
    from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer

    started = time.time()
    with SimulatorServer(SimulatorConfig(queued_seconds=1.0, total_seconds=4.0), port=0) as sim:
        print(f"Simulator listening on {sim.base_url}")
        _prepare_environment(sim.base_url)

        from airflow.utils.db import initdb

        initdb()
        from example_kling_text_to_video import dag  # type: ignore[import-not-found]

        run = dag.test()
        state = getattr(run, "state", None)
        result = _xcom(run, "wait")
        print()
        print(f"DAG run {DAG_ID}: {state}")
        if not result:
            print("No result: see the log above.")
            return 1
        video = REPO / "output" / "text_to_video.mp4"
        head = video.read_bytes()[:8] if video.exists() else b""
        print(f"Kling task id: {result['id']}")
        print(f"Video URL:     {result['video_url']} (expires {result['expires_at']})")
        print(
            f"Saved MP4:     {video.relative_to(REPO)} ({video.stat().st_size if video.exists() else 0} bytes, "
            f"ftyp box: {head[4:8] == b'ftyp'})"
        )
        ok = str(state).endswith("success") and head[4:8] == b"ftyp"
        ok = _store_and_announce() and ok
        print(f"Generations paid on the simulator: {sim.stats()['tasks_created']}; took {time.time() - started:.1f} s")
        return 0 if ok else 1


def _store_and_announce() -> bool:
    """Run the storage example; print the stored file and the asset event it left."""
    import hashlib

    from example_kling_store_asset import dag  # type: ignore[import-not-found]

    run = dag.test()
    state = getattr(run, "state", None)
    result = _xcom(run, "generate") or {}
    print()
    print(f"DAG run {STORE_DAG_ID}: {state}")
    stored = Path(result["output_path"].removeprefix("file://")) if result.get("output_path") else None
    data = stored.read_bytes() if stored is not None and stored.exists() else b""
    digest_ok = bool(data) and hashlib.sha256(data).hexdigest() == result.get("sha256")
    if stored is not None:
        print(
            f"Stored clip:   {result['output_path']} ({len(data)} bytes, sha256 {result.get('sha256')}, verified: {digest_ok})"
        )
    events = _asset_events(STORE_DAG_ID, run.run_id)
    for uri, extra in events:
        print(f"Asset event:   {uri}")
        print("  extra:       " + json.dumps(extra, indent=2, sort_keys=True).replace("\n", "\n               "))
    return str(state).endswith("success") and digest_ok and len(events) == 1


def _asset_events(dag_id: str, run_id: str) -> list[tuple[str, dict]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent, AssetModel)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
            .all()
        )
        return [(f"{asset.name} ({asset.uri})", dict(event.extra)) for event, asset in rows]


def _xcom(run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


if __name__ == "__main__":
    sys.exit(main())
