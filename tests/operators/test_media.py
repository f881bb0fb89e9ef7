"""Where media lives, through real Airflow (``dag.test()``) against the simulator: videos stored at
``output_path`` (memory://, file://), images read from storage and uploaded only for a new
generation, asset events with the generation's metadata, and the budget guard."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import fsspec
import pendulum
import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.idempotency import base_business_id
from airflow_provider_kling.models import KlingVideoRequest
from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor
from airflow_provider_kling.simulator.files import VIDEO
from tests.conftest import submit_task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
FAST = {"retry_delay": timedelta(seconds=0)}
FRAMES = Path(__file__).resolve().parents[2] / "example_dags" / "assets"
SAMPLE = VIDEO.read_bytes()


def make_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


@pytest.fixture
def memfs():
    """fsspec's process-wide in-memory filesystem, emptied before and after the test."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def requests_to(sim, endpoint: str) -> int:
    return sim.stats()["requests"][endpoint]


def asset_events(dag_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [dict(e.extra) for e in session.query(AssetEvent).filter_by(source_dag_id=dag_id).all()]


# --------------------------------------------------------------------------- output_path


@pytest.mark.parametrize("deferrable", [True, False])
def test_generate_stores_video_in_memory_bucket(dags, sim, memfs, deferrable):
    with make_dag(f"m_store_memory_{deferrable}") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="a kingfisher diving",
            output_path="memory://clips/{{ ti.task_id }}/{{ run_id | replace(':', '_') }}.mp4",
            poll_interval=1,
            timeout=60,
            deferrable=deferrable,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"}
    result = dags.xcom(run, "gen")
    stored = result["output_path"]
    assert stored.startswith("memory://clips/gen/") and stored.endswith(".mp4")
    data = memfs.cat_file(stored[len("memory://") :])
    assert data == SAMPLE
    assert result["size_bytes"] == len(SAMPLE) and result["sha256"] == hashlib.sha256(SAMPLE).hexdigest()
    assert dags.xcom(run, "gen", "kling_output_path") == stored
    assert result["video_url"] and dags.xcom(run, "gen", "kling_video_url") == result["video_url"]


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_stores_video_at_file_uri(dags, sim, tmp_path, mode):
    task = submit_task(business_id=f"kl_file_{mode}")
    target = tmp_path / "bucket" / "videos" / "clip.mp4"
    with make_dag(f"m_sensor_file_{mode}") as dag:
        KlingVideoSensor(
            task_id="wait",
            kling_task_id=task.id,
            output_path=f"file://{tmp_path}/bucket/videos/clip.mp4",
            poke_interval=1,
            timeout=60,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
        )
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "success"}
    result = dags.xcom(run, "wait")
    assert target.read_bytes() == SAMPLE
    assert result["output_path"] == f"file://{tmp_path}/bucket/videos/clip.mp4"
    assert result["size_bytes"] == len(SAMPLE) and result["sha256"] == hashlib.sha256(SAMPLE).hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["clip.mp4"]  # no staging file left behind


def test_url_like_output_path_never_creates_a_local_file(dags, sim, memfs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with make_dag("m_url_like") as dag:
        KlingGenerateVideoOperator(
            task_id="gen", prompt="p", output_path="memory://bucket/v.mp4", poll_interval=1, timeout=60
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"}
    assert memfs.cat_file("/bucket/v.mp4") == SAMPLE
    assert list(tmp_path.iterdir()) == []  # no ./memory:/bucket/v.mp4


def test_rendered_output_path_checked_before_any_request(dags, sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with make_dag("m_bad_rendered_output") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p",
            output_path="{{ 'nosuchscheme' }}://bucket/v.mp4",
            poll_interval=1,
            timeout=60,
            retries=2,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"} and dags.tries(run, "gen") == 1
    assert sim.stats()["requests"]["total"] == 0
    assert list(tmp_path.iterdir()) == []


def test_home_relative_paths_are_the_workers_home(dags, sim, tmp_path, monkeypatch):
    """``~/…`` in ``output_path`` and ``image_paths`` is the worker's home, never a folder named ``~``
    in whatever directory the task runs in."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "frames").mkdir(parents=True)
    cwd.mkdir()
    (home / "frames" / "first.png").write_bytes((FRAMES / "first_frame.png").read_bytes())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    with make_dag("m_home_paths") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p",
            image_paths=["~/frames/first.png"],
            output_path="~/videos/{{ ti.task_id }}.mp4",
            poll_interval=1,
            timeout=60,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"}
    assert (home / "videos" / "gen.mp4").read_bytes() == SAMPLE
    assert dags.xcom(run, "gen")["output_path"] == str(home / "videos" / "gen.mp4")
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("trailing", ["", "/"])
def test_a_folder_as_output_path_fails_before_paying(dags, sim, tmp_path, trailing):
    folder = tmp_path / "videos"
    folder.mkdir()
    with make_dag(f"m_folder_output{len(trailing)}") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p",
            output_path="{{ params.folder }}" + trailing,
            params={"folder": str(folder)},
            poll_interval=1,
            timeout=60,
            retries=2,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"} and dags.tries(run, "gen") == 1
    assert sim.stats()["requests"]["total"] == 0  # nothing paid, nothing downloaded
    assert list(folder.iterdir()) == []


def test_a_folder_as_output_path_is_refused_at_parse_when_it_says_so():
    with pytest.raises(KlingValidationError, match=r"output_path='/data/videos/' is a folder.*\{\{ ti.task_id \}\}"):
        KlingGenerateVideoOperator(task_id="g", prompt="p", output_path="/data/videos/")


def test_output_path_checked_at_parse():
    with pytest.raises(KlingValidationError, match=r"output_path='nosuchscheme://b/k.mp4'.*no filesystem"):
        KlingGenerateVideoOperator(task_id="g", prompt="p", output_path="nosuchscheme://b/k.mp4")
    with pytest.raises(KlingValidationError, match=r"output_path=.*s3://.*apache-airflow-providers-amazon"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", output_path="s3://aws_default@bucket/k.mp4")
    with pytest.raises(KlingValidationError, match=r"output_path=''"):
        KlingVideoSensor(task_id="w", kling_task_id="video_1", output_path="")
    # Jinja is checked after rendering, not at parse.
    KlingGenerateVideoOperator(task_id="g", prompt="p", output_path="{{ var.value.bucket }}/k.mp4")


# --------------------------------------------------------------------------- image_paths


def put_frames(memfs) -> list[str]:
    memfs.pipe_file("/frames/first.png", (FRAMES / "first_frame.png").read_bytes())
    memfs.pipe_file("/frames/last.png", (FRAMES / "last_frame.png").read_bytes())
    return ["memory://frames/first.png", "memory://frames/last.png"]


class CrashAfterFirstSubmit(KlingGenerateVideoOperator):
    """Fault injection: the first try dies after its (real) submit, before it waits."""

    def submit(self, context, hook):
        submission = super().submit(context, hook)
        if context["ti"].try_number == 1:
            raise RuntimeError("worker crashed after submit")
        return submission


def test_images_from_memory_uploaded_once_and_not_on_adopting_retry(dags, sim, memfs):
    paths = put_frames(memfs)
    with make_dag("m_images_adopt") as dag:
        CrashAfterFirstSubmit(
            task_id="gen",
            prompt="from first to last frame",
            image_paths=paths,
            min_balance_credits=1,
            poll_interval=1,
            timeout=60,
            retries=1,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"} and dags.tries(run, "gen") == 2
    stats = sim.stats()
    assert stats["tasks_created"] == 1
    assert requests_to(sim, "upload") == 2  # two images, uploaded once, by the try that paid
    assert requests_to(sim, "balance") == 1  # the adopting retry does not read the balance either
    create = next(r for r in sim.requests() if r["path"] == "/v1/videos/generations" and r["method"] == "POST")
    urls = create["body"]["image_urls"]
    assert len(urls) == 2 and all(u.startswith("http") for u in urls)
    digests = [hashlib.sha256((FRAMES / n).read_bytes()).hexdigest() for n in ("first_frame.png", "last_frame.png")]
    digest = KlingVideoRequest.from_kwargs(prompt="from first to last frame").digest(digests)
    assert dags.xcom(run, "gen", "kling_request_digest") == digest
    assert dags.xcom(run, "gen", "client_business_id") == base_business_id(
        run.dag_id, run.run_id, "gen", -1, request_digest=digest
    )


def test_missing_image_fails_before_any_request(dags, sim, memfs):
    with make_dag("m_missing_image") as dag:
        KlingSubmitOperator(
            task_id="submit",
            prompt="p",
            image_paths=["memory://frames/{{ 'nope' }}.png"],
            retries=2,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "failed"} and dags.tries(run, "submit") == 1
    assert sim.stats()["requests"]["total"] == 0


def test_not_an_image_fails_before_any_request(dags, sim, memfs):
    memfs.pipe_file("/frames/notes.png", b"just text, not a PNG")
    with make_dag("m_not_image") as dag:
        KlingSubmitOperator(task_id="submit", prompt="p", image_paths=["memory://frames/notes.png"])
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "failed"}
    assert sim.stats()["requests"]["total"] == 0


def test_image_paths_parse_time_rules(tmp_path):
    with pytest.raises(KlingValidationError, match=r"image_urls/image_paths=.*not both"):
        KlingSubmitOperator(
            task_id="s", prompt="p", image_urls=["https://example.com/a.png"], image_paths=[str(tmp_path / "a.png")]
        )
    with pytest.raises(KlingValidationError, match=r"duration=15: must be 5 or 10 with input images \(1 given\)"):
        KlingSubmitOperator(task_id="s", prompt="p", duration=15, image_paths=["memory://f/a.png"])
    with pytest.raises(KlingValidationError, match=r"image_paths='a.png'.*wrapped in a list"):
        KlingSubmitOperator(task_id="s", prompt="p", image_paths="a.png")
    with pytest.raises(KlingValidationError, match=r"image_paths\[0\]='nosuchscheme://b/a.png'"):
        KlingGenerateVideoOperator(task_id="g", prompt="p", image_paths=["nosuchscheme://b/a.png"])
    with pytest.raises(KlingValidationError, match=r"at most 2 images"):
        KlingSubmitOperator(task_id="s", prompt="p", image_paths=["a.png", "b.png", "c.png"])
    with pytest.raises(KlingValidationError, match=r"image_paths\[0\]='https://x/a.png'.*image_urls"):
        KlingSubmitOperator(task_id="s", prompt="p", image_paths=["https://x/a.png"])
    op = KlingSubmitOperator(task_id="s", prompt="p", image_paths=["{{ params.frame }}"])
    assert "image_paths" in op.template_fields


# --------------------------------------------------------------------------- budget guard


def test_budget_guard_fails_with_zero_creates(dags, sim, capsys):
    with make_dag("m_budget") as dag:
        KlingSubmitOperator(task_id="submit", prompt="p", min_balance_credits=10**9, retries=2, **FAST)
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "failed"} and dags.tries(run, "submit") == 1  # not retried
    assert sim.stats()["tasks_created"] == 0 and requests_to(sim, "create") == 0
    assert requests_to(sim, "balance") == 1
    out = capsys.readouterr()
    assert (
        "KlingInsufficientCreditsError: balance 100000 credits is below min_balance_credits=1000000000"
        in out.out + out.err
    )


def test_budget_guard_passes_above_the_minimum(dags, sim):
    with make_dag("m_budget_ok") as dag:
        KlingSubmitOperator(task_id="submit", prompt="p", min_balance_credits=100)
    run = dags.run(dag)
    assert dags.states(run) == {"submit": "success"} and sim.stats()["tasks_created"] == 1


@pytest.mark.parametrize("value", [-1, True, "10", float("nan")])
def test_min_balance_credits_checked_at_parse(value):
    with pytest.raises(KlingValidationError, match=r"min_balance_credits=.*>= 0"):
        KlingSubmitOperator(task_id="s", prompt="p", min_balance_credits=value)


# --------------------------------------------------------------------------- assets


def test_asset_event_extra_from_generate(dags, sim, memfs):
    clips = Asset("kling_clips")
    with make_dag("m_assets_generate") as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="a paper boat",
            mode="pro",
            duration=10,
            aspect_ratio="9:16",
            audio=True,
            output_path="memory://published/boat.mp4",
            outlets=[clips],
            poll_interval=1,
            timeout=60,
            deferrable=True,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "success"}
    result = dags.xcom(run, "gen")
    [extra] = asset_events("m_assets_generate")
    assert extra == {
        "kling_task_id": result["id"],
        "client_business_id": result["client_business_id"],
        "model": "kling-v3",
        "mode": "pro",
        "duration": 10,
        "aspect_ratio": "9:16",
        "audio": True,
        "prompt_sha256": hashlib.sha256(b"a paper boat").hexdigest(),
        "video_url": result["video_url"],
        "expires_at": result["expires_at"],
        "output_path": "memory://published/boat.mp4",
        "size_bytes": len(SAMPLE),
        "sha256": hashlib.sha256(SAMPLE).hexdigest(),
    }


def test_asset_event_extra_from_sensor_without_storage(dags, sim):
    task = submit_task(business_id="kl_assets_sensor")
    with make_dag("m_assets_sensor") as dag:
        KlingVideoSensor(
            task_id="wait", kling_task_id=task.id, outlets=[Asset("kling_clips")], poke_interval=1, timeout=60
        )
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "success"}
    [extra] = asset_events("m_assets_sensor")
    assert extra["kling_task_id"] == task.id and extra["client_business_id"] == "kl_assets_sensor"
    assert extra["video_url"] and extra["expires_at"] and "output_path" not in extra and "mode" not in extra
    assert dags.xcom(run, "wait", "kling_output_path") == ""  # the link falls back to the video URL
