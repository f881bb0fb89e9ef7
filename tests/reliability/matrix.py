"""The fault matrix: each fault, what the provider must do, and the test that proves it.

``docs/reliability.md`` is generated from this table (``python -m tests.reliability.matrix``) and a
test checks that it matches, so the published matrix cannot drift from what the tests assert.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


@dataclass(frozen=True)
class Case:
    """One fault, run through real Airflow (``dag.test()``) against the simulator.

    :param faults: simulator fault specs queued before the run.
    :param prompt: the prompt (markers select task-level faults).
    :param operator: ``generate`` (deferrable generate operator) or ``submit_sensor``.
    :param state: the final task state expected.
    :param tries: task tries expected.
    :param generations: paid generations expected on the simulator.
    :param error: exception class expected in the log of a failed run.
    """

    name: str
    fault: str
    expected: str
    faults: tuple[dict[str, Any], ...] = ()
    prompt: str = "a kestrel hovering over a field"
    operator: str = "generate"
    options: dict[str, Any] = field(default_factory=dict)
    conn_extra: dict[str, Any] = field(default_factory=dict)
    state: str = "success"
    tries: int = 1
    generations: int = 1
    error: str | None = None


CASES = [
    Case(
        "lost_create_response",
        "connection dropped after the server created (and charged) the task",
        "the hook resends the same body and id; the API replays the task",
        faults=({"fault": "drop_after_create", "endpoint": "create"},),
    ),
    Case(
        "drop_before_create",
        "connection dropped before anything was created",
        "resent with the same id; created once",
        faults=({"fault": "drop", "endpoint": "create"},),
    ),
    Case(
        "create_500",
        "HTTP 500 on create, twice",
        "retried with the same id",
        faults=({"fault": "server_error", "endpoint": "create", "count": 2},),
    ),
    Case(
        "create_429_storm",
        "429 with Retry-After on create, 3 times",
        "waits Retry-After each time, then submits",
        faults=({"fault": "rate_limit", "endpoint": "create", "count": 3, "retry_after": 1},),
    ),
    Case(
        "create_503",
        "503 rate_limit_unavailable on create",
        "waited out like a 429",
        faults=({"fault": "unavailable", "endpoint": "create", "count": 2, "retry_after": 1},),
    ),
    Case(
        "create_malformed",
        "HTTP 200 with truncated JSON after creating the task",
        "treated as a lost response: resent, replayed",
        faults=({"fault": "malformed", "endpoint": "create"},),
    ),
    Case(
        "status_429_storm",
        "429 with Retry-After on status, 4 times",
        "the trigger waits Retry-After, then polls",
        faults=({"fault": "rate_limit", "endpoint": "status", "count": 4, "retry_after": 1},),
    ),
    Case(
        "status_503",
        "503 on status",
        "waited out",
        faults=({"fault": "unavailable", "endpoint": "status", "count": 2, "retry_after": 1},),
    ),
    Case(
        "status_500_502",
        "500, then a 502 HTML page, on status",
        "retried (bounded)",
        faults=(
            {"fault": "server_error", "endpoint": "status", "count": 1},
            {"fault": "server_error", "endpoint": "status", "count": 1, "status": 502},
        ),
    ),
    Case(
        "status_malformed",
        "truncated JSON on status, twice",
        "retried (bounded)",
        faults=({"fault": "malformed", "endpoint": "status", "count": 2},),
    ),
    Case(
        "status_reset",
        "connection reset mid-poll, 3 times",
        "retried (bounded)",
        faults=({"fault": "drop", "endpoint": "status", "count": 3},),
    ),
    Case(
        "status_slow",
        "status response slower than the read timeout",
        "times out, retried",
        faults=({"fault": "slow", "endpoint": "status", "count": 1, "delay": 3},),
        conn_extra={"timeout": 1},
    ),
    Case(
        "late_visibility",
        "404 for a just-created task for 3 s",
        "tolerated (60 s grace)",
        prompt="x [sim:late_visibility]",
    ),
    Case("legacy_shapes", 'older status words, progress "65%", top-level url', "normalised", prompt="x [sim:legacy]"),
    Case(
        "never_finishes",
        "task stays in_progress forever",
        "KlingTimeoutError at the deadline (trigger deadline and defer timeout); the retry resumes the same task",
        prompt="x [sim:never_finish]",
        options={"timeout": 2, "retries": 1},
        state="failed",
        tries=2,
        error="KlingTimeoutError",
    ),
    Case(
        "content_policy",
        "task fails with content_policy_violation",
        "fails at once, never retried",
        prompt="x [sim:content_policy]",
        options={"retries": 3},
        state="failed",
        error="KlingContentPolicyError",
    ),
    Case(
        "content_policy_422",
        "422 content_policy_violation at create",
        "fails at once, nothing created",
        prompt="x [sim:content_policy_422]",
        options={"retries": 3},
        state="failed",
        generations=0,
        error="KlingContentPolicyError",
    ),
    Case(
        "policy_message",
        "generation_failed with a localised policy message",
        "recognised as policy: no retry",
        prompt="x [sim:policy_message]",
        options={"retries": 3},
        state="failed",
        error="KlingContentPolicyError",
    ),
    Case(
        "generation_failed_once",
        "generation fails once (retryable)",
        "exactly one new generation under _r2",
        prompt="x [sim:fail_first=1]",
        options={"retries": 2},
        tries=2,
        generations=2,
    ),
    Case(
        "regeneration_then_crash",
        "generation fails, the retry regenerates and the worker dies right after",
        "the next try adopts the regeneration: 2 generations, never 3",
        prompt="x [sim:fail_first=1]",
        operator="crash_after_regeneration",
        options={"retries": 3},
        tries=3,
        generations=2,
    ),
    Case(
        "crash_after_submit",
        "worker dies after the submit, before XCom",
        "the retry adopts the generation",
        operator="crash_after_submit",
        options={"retries": 1},
        tries=2,
    ),
    Case(
        "completed_without_url",
        "completed with empty result.data",
        "3 more polls, then a contract error; never resubmitted (it was billed)",
        prompt="x [sim:no_url]",
        options={"retries": 0},
        state="failed",
        error="KlingAPIError",
    ),
    Case(
        "sensor_failed_generation",
        "the sensor's generation fails",
        "the sensor fails without retries (it cannot regenerate)",
        prompt="x [sim:generation_failed]",
        operator="submit_sensor",
        options={"retries": 3},
        state="failed",
        error="KlingTaskFailedFinalError",
    ),
]

#: Faults proved outside this table: (fault, expected, test).
OTHER_TESTS = [
    (
        "completed generation found expired on retry",
        "generates again under _r{try}; the log says the URL expired",
        "tests/operators/test_exactly_once.py::test_expired_completed_generation_is_generated_again",
    ),
    (
        "this try's own regeneration already failed",
        "the try fails (retryable) instead of paying again",
        "tests/operators/test_exactly_once.py::test_own_failed_regeneration_fails_the_try_without_paying",
    ),
    (
        "5,000 waits on one key, server enforcing the documented query quota",
        "client-side budget keeps 429s rare; a Retry-After pauses every wait on the key",
        "tests/reliability/test_quota.py::test_many_waits_on_one_key_respect_the_quota",
    ),
    (
        "two processes on one key (200 waits and 30 creates each), default budgets summing to twice the quota",
        "the AIMD pace converges to the quota: <= 0.5 % 429s after 5 s, no request inside a Retry-After "
        "window, every event correct, no double create",
        "tests/reliability/test_multiprocess.py::test_processes_sharing_a_key_converge_to_the_quota",
    ),
    (
        "worker process SIGKILLed after submit, then retried",
        "the retry adopts the generation: 1 paid",
        "tests/e2e/test_kling_e2e.py::test_worker_killed_after_submit_is_resumed",
    ),
    (
        "triggerer SIGKILLed mid-wait and restarted",
        "same generation, same deadline, no new submit",
        "tests/e2e/test_kling_e2e.py::test_triggerer_killed_mid_wait_resumes",
    ),
    (
        "hostile server bodies and headers (property-based)",
        "only Kling errors escape the parsers",
        "tests/unit/test_hostile_responses.py",
    ),
    ("400 / 401 / 402 / 404", "raised at once, never retried", "tests/hook/test_hook.py::test_401_is_not_retried"),
]


def render() -> str:
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Every row is asserted by an automated test against the local simulator, through real Airflow",
        "(`dag.test()` runs the operator, defers, runs the trigger and resumes). Each test checks the final",
        "task state, the number of tries and the number of **paid generations** on the simulator.",
        "The table is generated from `tests/reliability/matrix.py`; `test_doc_matches_matrix` fails if",
        "this file drifts. Regenerate with `uv run python -m tests.reliability.matrix`.",
        "",
        "| fault | provider behaviour | final state | tries | paid generations | duplicates |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        state = case.state + (f" ({case.error})" if case.error else "")
        lines.append(f"| {case.fault} | {case.expected} | {state} | {case.tries} | {case.generations} | 0 |")
    lines += [
        "",
        "*Duplicates* are paid generations beyond one per generation that actually failed (a retryable",
        "failure allows exactly one new one); each test asserts 0 from the simulator's task list, and",
        "`test_no_duplicates_over_the_matrix` asserts the total over the matrix is **0**.",
        "",
        "## Proved by other tests",
        "",
        "| fault | provider behaviour | test |",
        "|---|---|---|",
    ]
    lines += [f"| {fault} | {expected} | `{test}` |" for fault, expected, test in OTHER_TESTS]
    lines += [
        "",
        "## What the provider cannot handle",
        "",
        "- **No cancel endpoint.** Killing or timing out a task stops the *waiting* only; the remote",
        "  generation continues and is billed. A retry resumes it instead of paying again.",
        "- **A lost create response while the API's replay is not yet visible.** The lookup before",
        "  submitting relies on the API finding the task by `client_business_id`; if it answered 404 for",
        "  a task created moments ago (late visibility), the next try resubmits with the *same* id, which",
        "  the API replays. Only a regeneration id (`_r{try}`) created but invisible when a later try",
        "  looks could, in theory, be followed by another regeneration.",
        "- **Expired videos.** After `expires_at` the URL is dead and there is no refresh: getting the",
        "  video again means a new (paid) generation.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    DOC.write_text(render())
    sys.stdout.write(f"wrote {DOC}\n")
