"""Two real triggerers (HA) and the LocalExecutor workers on ONE key, against a quota-enforcing simulator.

Its own Airflow stack (four worker slots) and a simulator in its own process whose query quota is
smaller than what the deferred generations would poll at a fixed pace, and smaller than the two
triggerers' default budgets together: the triggerers must adapt to it. Triggerer A starts with
``--capacity`` of about half the generations, so the split between the two triggerers does not depend
on SQLite (which has no row locks): A fills up, then B starts and takes the ones deferred after that. A
is SIGKILLed while every generation is still running; B takes A's triggers over once A's heartbeat is older than
``[triggerer] triggerer_health_check_threshold`` (10 s in the stack), and every task succeeds in its first
try with its own generation, paid once.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict

import pytest

from tests.conftest import connection_uri
from tests.e2e.airflow_stack import AirflowStack
from tests.e2e.checks import CREATE_PATH, assert_key_never_stored, plain
from tests.e2e.conftest import DAGS_FOLDER, skip_reason
from tests.e2e.dags.e2e_kling_ha import DAG_ID, PROMPTS
from tests.reliability.simulator_process import call, simulator_process

pytestmark = pytest.mark.e2e

GENERATIONS = len(PROMPTS)
#: Triggerer A runs at most this many triggers; B gets the rest, then A's.
CAPACITY_A = GENERATIONS // 2
#: B holds at least this many triggers (deferred after A filled up) when A is killed.
BEFORE_KILL_ON_B = GENERATIONS // 4
PARALLELISM = 4
#: The simulator's query quota per second (a minute and ten seconds scale with it). The generations poll
#: every second, so GENERATIONS a second at a fixed pace, and the two triggerers' default budgets allow
#: 2 x 47.5 a second: both far above it.
QUERY_PER_SECOND = 20
#: A 429 is read, and its Retry-After pause begins, at most this long after the server logged it
#: (requests already in flight, event-loop lag on a loaded 2-core machine).
IN_FLIGHT_SLACK = 0.5


class SimulatorClient:
    """The part of the in-process simulator's API that the shared e2e checks use, over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def requests(self) -> list[dict]:
        return call(self.base_url, "/_sim/requests")["requests"]

    def stats(self) -> dict:
        return call(self.base_url, "/_sim/stats")


@pytest.fixture
def quota_sim(tmp_path):
    """The simulator in its own process, enforcing a query quota of QUERY_PER_SECOND on every key."""
    with simulator_process(tmp_path, "--queued-seconds", "1") as base:
        call(
            base,
            "/_sim/config",
            {
                "enforce_quota": True,
                "query_per_sec": QUERY_PER_SECOND,
                "query_per_min": 60 * QUERY_PER_SECOND,
                "query_burst_10s": 10 * QUERY_PER_SECOND,
            },
        )
        yield SimulatorClient(base)


@pytest.fixture
def ha_stack(request, quota_sim):
    """A stack of its own: triggerer A with capacity CAPACITY_A, PARALLELISM worker slots. When the test
    fails, its Airflow home is kept, with the simulator's request log in ``simulator-requests.json``."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    stack = AirflowStack(
        DAGS_FOLDER,
        env={"AIRFLOW_CONN_KLING_DEFAULT": connection_uri(quota_sim.base_url)},
        parallelism=PARALLELISM,
        component_args={"triggerer": ["--capacity", str(CAPACITY_A)]},
    )
    failed_before = request.session.testsfailed
    try:
        stack.start(timeout=180, wait_for_dags=[DAG_ID])
        yield stack
        if request.session.testsfailed > failed_before:
            stack.keep_home = True
            (stack.home / "simulator-requests.json").write_text(json.dumps(quota_sim.requests()))
            sys.stderr.write(f"\n[e2e] HA test failed: Airflow home kept at {stack.home}\n")
    finally:
        stack.stop()


def rows_of_run(stack, run_id: str) -> dict[int, dict]:
    """``{map_index: trigger row}`` of the mapped tasks deferred right now."""
    tis = stack.query(
        "SELECT map_index, trigger_id FROM task_instance WHERE dag_id = ? AND run_id = ? AND trigger_id IS NOT NULL",
        (DAG_ID, run_id),
    )
    rows = {row["id"]: row for row in stack.trigger_rows()}
    return {map_index: rows[trigger_id] for map_index, trigger_id in tis if trigger_id in rows}


def inside_retry_after(requests: list[dict]) -> list[tuple[float, float]]:
    """(429 time, request time) pairs: a request of the same sender inside a 429's Retry-After window."""
    hits = [r for r in requests if r["status"] == 429]
    found = []
    for hit in hits:
        window_end = hit["t"] + float(hit["retry_after"])
        found += [(hit["t"], r["t"]) for r in requests if hit["t"] + IN_FLIGHT_SLACK < r["t"] < window_end]
    return found


def senders(
    requests: list[dict], on_a: set[str], kling_ids: set[str], killed_at: float
) -> dict[tuple[str, str], list[dict]]:
    """The status and create requests by (sender, bucket). A polls its generations (``on_a``) until it
    is killed, B polls its own and then A's; a status request by ``client_business_id`` and a create
    come from the task process of that business id (each task runs in a process of its own)."""
    creates = {r["body"]["client_business_id"] for r in requests if r["method"] == "POST"}
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in requests:
        ref = r["body"]["client_business_id"] if r["method"] == "POST" else r["path"].rsplit("/", 1)[-1]
        if ref in on_a and r["t"] <= killed_at:
            sender = "triggerer A"
        elif ref in kling_ids:
            sender = "triggerer B"
        else:
            assert ref in creates, f"a request from an unknown sender: {r}"
            sender = f"task {ref}"
        out[sender, "submit" if r["method"] == "POST" else "query"].append(r)
    return out


def test_ha_triggerers_share_a_key_and_take_over(ha_stack, quota_sim):
    """GENERATIONS mapped, deferred generations split over triggerers A and B; A is SIGKILLed mid-wait and B
    takes its rows over. Every task succeeds in its first try with its own prompt's generation, each paid
    once; status 429s stay within 1 % and no process sends inside the Retry-After of a 429 it was given;
    the key is never stored."""
    stack, sim = ha_stack, quota_sim
    t0 = time.monotonic()
    timeline: dict[str, float] = {}
    job_a = stack.job_id("triggerer")
    assert job_a
    run_id = stack.trigger_dag(DAG_ID)

    # The first trigger row seen of each map index, and the last row seen held by each triggerer.
    seen: dict[int, dict] = {}
    held: dict[int, dict[int, dict]] = defaultdict(dict)

    def rows_now() -> dict[int, dict]:
        states = stack.task_states(DAG_ID, run_id)
        assert not {k: v for k, v in states.items() if v in ("failed", "up_for_retry")}, states
        rows = rows_of_run(stack, run_id)
        for i, row in rows.items():
            seen.setdefault(i, row)
            if row["triggerer_id"]:
                held[i][row["triggerer_id"]] = row
        return rows

    def holders() -> Counter[int]:
        return Counter(row["triggerer_id"] for row in rows_now().values() if row["triggerer_id"])

    def polled(kling_ids) -> bool:
        return set(kling_ids) <= {r["path"].rsplit("/", 1)[-1] for r in sim.requests() if r["method"] == "GET"}

    # A takes triggers up to its capacity, then B starts and takes the ones deferred after that.
    stack.wait_for(
        lambda: holders()[job_a] == CAPACITY_A, timeout=120, interval=0.2, what=f"A holding {CAPACITY_A} triggers"
    )
    timeline["A full"] = time.monotonic() - t0
    stack.start_component("triggerer", name="triggerer-b", args=["--capacity", str(GENERATIONS)])
    job_b = stack.job_id("triggerer-b")
    assert job_b and job_b != job_a
    # Both triggerers poll their generations on the one key; then A dies, every generation still running.
    split = stack.wait_for(
        lambda: (
            (rows := rows_now())
            and Counter(r["triggerer_id"] for r in rows.values())[job_b] >= BEFORE_KILL_ON_B
            and polled(plain(r["kwargs"])["kling_task_id"] for r in rows.values() if r["triggerer_id"])
            and rows
        ),
        timeout=120,
        interval=0.2,
        what=f"A and B polling, B holding {BEFORE_KILL_ON_B} triggers",
    )
    split = {i: r for i, r in split.items() if r["triggerer_id"]}
    split_holders = Counter(r["triggerer_id"] for r in split.values())
    assert set(split_holders) == {job_a, job_b} and split_holders[job_a] == CAPACITY_A, split_holders
    on_a = {i: plain(r["kwargs"])["kling_task_id"] for i, r in split.items() if r["triggerer_id"] == job_a}
    stack.kill("triggerer")
    killed_at = time.time()
    timeline["A killed"] = time.monotonic() - t0
    status = {t["id"]: t["status"] for t in sim.stats()["tasks"]}
    assert all(status[k] != "completed" for k in on_a.values()), "A was killed after its generations ended"
    assert all(stack.task_states(DAG_ID, run_id)[f"generate[{i}]"] == "deferred" for i in on_a)

    # B takes A's rows over (the kwargs, deadline included, unchanged); every generation ends up deferred on B.
    stack.wait_for(
        lambda: set(holders()) == {job_b} and len(seen) == GENERATIONS,
        timeout=90,
        interval=0.2,
        what="every trigger on B",
    )
    timeline["all on B"] = time.monotonic() - t0
    for i in on_a:
        assert set(held[i]) == {job_a, job_b}, (i, set(held[i]))
        assert held[i][job_b]["id"] == split[i]["id"] and plain(held[i][job_b]["kwargs"]) == plain(split[i]["kwargs"])

    assert stack.wait_for_dag_run(DAG_ID, run_id, timeout=150) == "success", stack.diagnostics()
    timeline["run done"] = time.monotonic() - t0

    # Every mapped task instance succeeded in its first try, with its own prompt's generation.
    tis = stack.query(
        "SELECT map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY map_index",
        (DAG_ID, run_id),
    )
    assert [tuple(ti) for ti in tis] == [(i, "success", 1) for i in range(GENERATIONS)], tis
    stats = sim.stats()
    by_id = {t["id"]: t for t in stats["tasks"]}
    for i, prompt in enumerate(PROMPTS):
        result = stack.xcom(DAG_ID, run_id, "generate", map_index=i)
        assert result["status"] == "completed" and result["video_url"], result
        assert by_id[result["id"]]["prompt"] == prompt, (i, result)
        assert result["id"] == plain(seen[i]["kwargs"])["kling_task_id"], (i, result)
    # Each generation paid exactly once: no double billing across the takeover.
    log = sim.requests()
    creates = [r for r in log if r["method"] == "POST" and r["path"].rstrip("/") == CREATE_PATH]
    assert stats["tasks_created"] == GENERATIONS == sum(r["status"] == 200 for r in creates)
    assert len({r["body"]["client_business_id"] for r in creates if r["status"] == 200}) == GENERATIONS

    # The trigger of each of A's tasks started on A, never fired there, and fired on B.
    for i in on_a:
        folder = stack.task_log_dir(DAG_ID, run_id, "generate", i)
        log_a = (folder / f"attempt=1.log.trigger.{job_a}.log").read_text()
        log_b = (folder / f"attempt=1.log.trigger.{job_b}.log").read_text()
        assert "starting" in log_a and "Trigger fired event" not in log_a, i
        assert "starting" in log_b and "Trigger fired event" in log_b, i

    # The quota: few 429s, and no sender inside the Retry-After window of a 429 it was given.
    polls = [r for r in log if r["method"] == "GET" and r["path"].startswith(CREATE_PATH + "/")]
    limited = [r for r in polls if r["status"] == 429]
    kling_ids = {plain(row["kwargs"])["kling_task_id"] for row in seen.values()}
    by_sender = senders([*polls, *creates], set(on_a.values()), kling_ids, killed_at)
    first, last = min(r["t"] for r in polls), max(r["t"] for r in polls)
    summary = (
        f"{GENERATIONS} generations, quota {QUERY_PER_SECOND}/s: {len(polls)} status requests "
        f"({sum(r['status'] == 200 for r in polls) / (last - first):.1f}/s served), {len(limited)} 429s ("
        + ", ".join(
            f"{sender} {sum(r['status'] == 429 for r in sent)}"
            for (sender, bucket), sent in sorted(by_sender.items())
            if bucket == "query" and sender.startswith("triggerer")
        )
        + f"), {sum(r['status'] == 429 for r in creates)} of {len(creates)} creates limited; "
        + ", ".join(f"{k} {v:.0f}s" for k, v in timeline.items())
    )
    print(summary)
    assert len(limited) <= 0.01 * len(polls), summary
    for (sender, bucket), sent in by_sender.items():
        assert all("retry_after" in r for r in sent if r["status"] == 429)
        assert inside_retry_after(sent) == [], f"{sender}: {bucket} requests inside a Retry-After window"

    assert_key_never_stored(stack, sim, list(seen.values()))
