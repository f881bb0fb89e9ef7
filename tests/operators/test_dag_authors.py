"""DAG authors' world, through real Airflow (``dag.test()``): TaskFlow inputs, request-aware
idempotency, final failures and Airflow's sensor semantics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_provider_kling.operators.kling import KlingGenerateVideoOperator, KlingSubmitOperator
from airflow_provider_kling.sensors.kling import KlingVideoSensor
from tests.conftest import connection_uri, submit_task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SAME_RUN = pendulum.datetime(2026, 3, 1, 12, tz="UTC")
FAST = {"retry_delay": timedelta(seconds=0)}
IMAGE = "https://example.com/first.png"


def prompt_of(sim, result: dict[str, Any]) -> str:
    return sim.state.tasks[result["id"]].prompt


def creates(sim) -> int:
    return sim.stats()["tasks_created"]


# ---------------------------------------------------------------------- TaskFlow inputs


def test_taskflow_outputs_are_accepted_at_parse_and_sent_resolved(dags, sim):
    with DAG("t_taskflow_inputs", schedule=None, start_date=START) as dag:

        @task
        def make_prompt() -> str:
            return "a kingfisher diving"

        @task
        def upload() -> str:
            return IMAGE

        @task
        def mode() -> str:
            return "pro"

        KlingGenerateVideoOperator(
            task_id="gen", prompt=make_prompt(), image_urls=[upload()], mode=mode(), poll_interval=1, timeout=60
        )
    run = dags.run(dag)
    assert dags.states(run)["gen"] == "success"
    created = sim.state.tasks[dags.xcom(run, "gen")["id"]]
    assert (created.prompt, created.mode) == ("a kingfisher diving", "pro")
    assert creates(sim) == 1


@pytest.mark.parametrize(
    ("field", "bad"),
    [("prompt", ""), ("image_urls", ["not a url"]), ("duration", 7), ("mode", "ultra")],
)
def test_bad_resolved_value_fails_before_any_request(dags, sim, field, bad):
    with DAG(f"t_taskflow_bad_{field}", schedule=None, start_date=START) as dag:

        @task
        def value() -> Any:
            return bad

        kwargs: dict[str, Any] = {"prompt": "a heron", field: value()}
        KlingSubmitOperator(task_id="s", retries=2, **FAST, **kwargs)
    run = dags.run(dag)
    assert dags.states(run)["s"] == "failed" and dags.tries(run, "s") == 1
    assert dags.failures() == ["KlingValidationError"]
    assert creates(sim) == 0
    assert sim.stats()["requests"]["create"] == 0 and sim.stats()["requests"]["status"] == 0


def test_every_request_kwarg_works_through_expand_and_expand_kwargs(dags, sim):
    full = {
        "prompt": "a glacier calving",
        "mode": "pro",
        "duration": 10,
        "aspect_ratio": "9:16",
        "image_urls": [IMAGE],
        "audio": True,
        "negative_prompt": "blur",
        "watermark": False,
        "extra_body": {"metadata": {"seed": 7}},
        "model": "kling-v3",
    }
    with DAG("t_expand_every_kwarg", schedule=None, start_date=START) as dag:

        @task
        def kwargs_list() -> list[dict[str, Any]]:
            return [full, {"prompt": "a quiet harbour"}]

        @task
        def prompts() -> list[str]:
            return ["one", "two"]

        KlingSubmitOperator.partial(task_id="by_kwargs").expand_kwargs(kwargs_list())
        KlingSubmitOperator.partial(task_id="by_prompt", mode="pro").expand(prompt=prompts())
        for name, value in full.items():
            if name != "prompt":
                KlingSubmitOperator.partial(task_id=f"one_{name}", prompt=f"field {name}").expand(**{name: [value]})
    run = dags.run(dag)
    states = dags.states(run)
    assert states and set(states.values()) == {"success"}, states
    first = sim.state.tasks[dags.xcom(run, "by_kwargs", map_index=0)]
    assert (first.prompt, first.mode, first.duration, first.audio) == ("a glacier calving", "pro", 10, True)
    assert [sim.state.tasks[dags.xcom(run, "by_prompt", map_index=i)].prompt for i in (0, 1)] == ["one", "two"]
    assert creates(sim) == 4 + len(full) - 1


# ---------------------------------------------------------------------- idempotency covers the request


def generate_dag(prompt: str, **kwargs: Any) -> DAG:
    with DAG("t_same_run", schedule=None, start_date=START) as dag:
        KlingGenerateVideoOperator(task_id="gen", prompt=prompt, poll_interval=1, timeout=60, **kwargs)
    return dag


def test_edited_prompt_on_the_same_run_generates_the_new_prompt(dags, sim):
    first = dags.run(generate_dag("a heron at dawn"), logical_date=SAME_RUN, run_after=SAME_RUN)
    old = dags.xcom(first, "gen")
    old_business_id = dags.xcom(first, "gen", "client_business_id")
    edited = dags.run(generate_dag("a crane at dusk"), logical_date=SAME_RUN, run_after=SAME_RUN)
    assert edited.run_id == first.run_id
    new = dags.xcom(edited, "gen")
    assert creates(sim) == 2 and new["id"] != old["id"]
    assert prompt_of(sim, new) == "a crane at dusk"
    assert dags.xcom(edited, "gen", "kling_task_id") == new["id"]
    assert dags.xcom(edited, "gen", "client_business_id") != old_business_id
    mode_changed = dags.run(generate_dag("a crane at dusk", mode="pro"), logical_date=SAME_RUN, run_after=SAME_RUN)
    assert creates(sim) == 3 and sim.state.tasks[dags.xcom(mode_changed, "gen")["id"]].mode == "pro"


def test_same_request_on_the_same_run_adopts_with_no_new_create(dags, sim):
    first = dags.run(generate_dag("a heron at dawn"), logical_date=SAME_RUN, run_after=SAME_RUN)
    first_id, first_digest = dags.xcom(first, "gen")["id"], dags.xcom(first, "gen", "kling_request_digest")
    dags.run(generate_dag("an edited heron"), logical_date=SAME_RUN, run_after=SAME_RUN)
    assert creates(sim) == 2
    again = dags.run(generate_dag("a heron at dawn"), logical_date=SAME_RUN, run_after=SAME_RUN)
    assert creates(sim) == 2  # the same request: 0 new creates
    assert dags.xcom(again, "gen")["id"] == first_id
    assert dags.xcom(again, "gen", "kling_request_digest") == first_digest


def mapped_dag(subjects: list[str]) -> DAG:
    with DAG("t_mapped_edit", schedule=None, start_date=START) as dag:

        @task
        def prompts() -> list[str]:
            return subjects

        KlingGenerateVideoOperator.partial(task_id="gen", poll_interval=1, timeout=60, deferrable=True).expand(
            prompt=prompts()
        )
    return dag


def test_mapped_list_edit_generates_every_changed_index_and_never_another_prompts_video(dags, sim):
    first = dags.run(mapped_dag(["a", "b", "c"]), logical_date=SAME_RUN, run_after=SAME_RUN)
    assert [prompt_of(sim, dags.xcom(first, "gen", map_index=i)) for i in range(3)] == ["a", "b", "c"]
    assert creates(sim) == 3
    edited = dags.run(mapped_dag(["z", "a", "b", "c"]), logical_date=SAME_RUN, run_after=SAME_RUN)
    results = [dags.xcom(edited, "gen", map_index=i) for i in range(4)]
    assert [prompt_of(sim, r) for r in results] == ["z", "a", "b", "c"]
    assert creates(sim) == 3 + 4  # every index changed its request


# ---------------------------------------------------------------------- final failures


class StubKling:
    """A loopback Kling API whose every generation ends as ``body`` says (counts creates)."""

    def __init__(self, status: str, error: dict[str, Any]) -> None:
        self.creates = 0
        self.by_business_id: dict[str, str] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def task(self, task_id: str) -> dict[str, Any]:
                return {"id": task_id, "status": status, "error": error, "created_at": int(time.time())}

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                business_id = body["client_business_id"]
                if business_id not in stub.by_business_id:
                    stub.creates += 1
                    stub.by_business_id[business_id] = f"video_stub{stub.creates}"
                self.reply(200, self.task(stub.by_business_id[business_id]))

            def do_GET(self) -> None:
                key = self.path.rsplit("/", 1)[-1]
                task_id = stub.by_business_id.get(key) or (key if key in stub.by_business_id.values() else None)
                if task_id is None:
                    self.reply(404, {"error": {"code": "not_found", "message": "no such task"}})
                else:
                    self.reply(200, self.task(task_id))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubKling:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def stub(monkeypatch, request) -> Iterator[StubKling]:
    status, error = request.param
    with StubKling(status, error) as server:
        monkeypatch.setenv("AIRFLOW_CONN_KLING_STUB", connection_uri(server.url))
        yield server


@pytest.mark.parametrize(
    "stub",
    [("failed", {"code": "InvalidParameter", "message": "image too small"})],
    indirect=True,
)
@pytest.mark.parametrize("deferrable", [False, True])
def test_input_invalid_failure_is_final_one_generation_despite_retries(dags, stub, deferrable):
    with DAG(f"t_invalid_final_{deferrable}", schedule=None, start_date=START) as dag:
        KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p",
            kling_conn_id="kling_stub",
            poll_interval=1,
            timeout=30,
            deferrable=deferrable,
            retries=3,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed"} and dags.tries(run, "gen") == 1
    assert dags.failures() == ["KlingTaskFailedFinalError"]
    assert stub.creates == 1


@pytest.mark.parametrize("stub", [("exploded", {"code": "internal", "message": "worker died"})], indirect=True)
def test_unknown_status_with_error_object_is_failed_at_once(dags, stub):
    with DAG("t_unknown_status_error", schedule=None, start_date=START) as dag:
        gen = KlingGenerateVideoOperator(
            task_id="gen",
            prompt="p",
            kling_conn_id="kling_stub",
            poll_interval=1,
            timeout=5,
        )
        # After gen (which creates video_stub1) whatever its outcome: before it, the id is a 404.
        gen >> KlingVideoSensor(
            task_id="sense",
            trigger_rule="all_done",
            kling_task_id="video_stub1",
            kling_conn_id="kling_stub",
            poke_interval=1,
            timeout=5,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"gen": "failed", "sense": "failed"}
    assert sorted(dags.failures()) == ["KlingTaskFailedError", "KlingTaskFailedFinalError"]  # not a timeout


# ---------------------------------------------------------------------- the sensor


def test_reschedule_sensor_on_a_404_id_fails_within_grace_plus_two_intervals(dags, sim):
    grace, interval = 3.0, 1.0
    with DAG("t_reschedule_404", schedule=None, start_date=START) as dag:
        KlingVideoSensor(
            task_id="wait",
            kling_task_id="video_doesnotexist",
            mode="reschedule",
            poke_interval=interval,
            not_found_grace=grace,
            timeout=300,
        )
    started = time.monotonic()
    run = dags.run(dag)
    elapsed = time.monotonic() - started
    assert dags.states(run) == {"wait": "failed"} and dags.failures() == ["KlingAPIError"]
    # The bound the issue asks for, with room for dag.test()'s own loop; the timeout is 300 s.
    assert elapsed < grace + 2 * interval + 15, elapsed


@pytest.mark.parametrize("rendered", ["None", "", "null", "['video_a']", "{'id': 1}", "video a", "a/b"])
def test_impossible_task_id_fails_at_once_pointing_at_the_template(rendered):
    from airflow_provider_kling.exceptions import KlingValidationError

    sensor = KlingVideoSensor(task_id="wait", kling_task_id=rendered)
    with pytest.raises(KlingValidationError, match="check the kling_task_id template"):
        sensor.execute({})  # type: ignore[arg-type]


def test_task_id_rendering_to_none_fails_with_one_try(dags, sim):
    with DAG("t_sensor_none", schedule=None, start_date=START) as dag:
        KlingVideoSensor(
            task_id="wait",
            kling_task_id="{{ ti.xcom_pull(task_ids='nothing_pushed_this') }}",
            poke_interval=1,
            timeout=60,
            retries=3,
            **FAST,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"wait": "failed"} and dags.tries(run, "wait") == 1
    assert dags.failures() == ["KlingValidationError"]
    assert sim.stats()["requests"]["status"] == 0


MODES = [{"mode": "poke"}, {"mode": "reschedule"}, {"deferrable": True}]


@pytest.mark.parametrize("mode", MODES, ids=["poke", "reschedule", "deferrable"])
@pytest.mark.parametrize(
    ("prompt", "soft_fail", "state", "error"),
    [
        ("p [sim:never_finish]", True, "skipped", None),
        ("p [sim:never_finish]", False, "failed", "KlingSensorTimeout"),
        ("p [sim:generation_failed]", True, "failed", "KlingTaskFailedFinalError"),
    ],
    ids=["timeout-soft_fail", "timeout", "failed-soft_fail"],
)
def test_soft_fail_skips_timeouts_and_never_failures(dags, sim, mode, prompt, soft_fail, state, error):
    kling_task = submit_task(prompt, business_id=f"kl_soft_{len(prompt)}_{soft_fail}")
    with DAG("t_soft_fail", schedule=None, start_date=START) as dag:
        KlingVideoSensor(
            task_id="wait",
            kling_task_id=kling_task.id,
            poke_interval=1,
            timeout=3,
            soft_fail=soft_fail,
            retries=2,
            **FAST,
            **mode,
        )
    run = dags.run(dag)
    assert dags.states(run) == {"wait": state} and dags.tries(run, "wait") == 1
    assert dags.failures() == ([error] if error else [])
