"""Every call ends: a server trickling one byte at a time never holds a call past its deadline, and a
``Retry-After`` of 0 or a past date waits the backoff (>= 1 s), never a tight loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from airflow_provider_kling.api import RetryPolicy
from airflow_provider_kling.exceptions import KlingAPIError, KlingRateLimitError
from airflow_provider_kling.hooks.kling import KlingHook
from tests.conftest import submit_task
from tests.network.conftest import trigger_event
from tests.network.servers import LoopbackServer

#: The issue's bound: a call ends by its deadline plus this.
SLACK = 2.0


def _run_bounded(target, limit: float):
    """Run ``target`` in a thread; return (finished, result or exception, seconds taken)."""
    outcome: list = []
    start = time.monotonic()

    def run():
        try:
            outcome.append(target())
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), (outcome[0] if outcome else None), time.monotonic() - start


def test_trickling_status_never_holds_get_task_past_its_deadline(sim):
    task = submit_task(business_id="kl_trickle_sync")
    sim.add_fault(fault="trickle", endpoint="status", count=-1, delay=1.0)
    hook = KlingHook()
    deadline = time.time() + 3
    try:
        finished, outcome, _ = _run_bounded(
            lambda: hook.get_task(task.id, policy=RetryPolicy(deadline=deadline)), 3 + SLACK + 5
        )
        assert finished, "get_task still running 5 s after deadline + slack"
        assert isinstance(outcome, KlingAPIError) and outcome.code == "timeout", outcome
        assert time.time() <= deadline + SLACK
    finally:
        hook.close()


def test_trickling_status_never_holds_the_trigger_past_its_deadline(sim):
    task = submit_task(business_id="kl_trickle_async")
    sim.add_fault(fault="trickle", endpoint="status", count=-1, delay=1.0)

    async def run():
        return await asyncio.wait_for(trigger_event(task.id, seconds=3, poll=0.1), 3 + SLACK + 5)

    start = time.time()
    event = asyncio.run(run())
    assert event["status"] == "timeout", event
    assert time.time() <= start + 3 + SLACK


def test_a_call_without_a_deadline_gets_the_default(sim):
    """A policy without a deadline ends after its default even while the API throttles for ever."""
    sim.add_fault(fault="rate_limit", endpoint="balance", count=-1, retry_after=2)
    hook = KlingHook()
    try:
        finished, outcome, _ = _run_bounded(lambda: hook.get_balance(RetryPolicy(default_seconds=3)), 3 + SLACK + 5)
    finally:
        hook.close()
    assert finished and isinstance(outcome, KlingRateLimitError), outcome
    # Waits of 2 s: the first request, one after 2 s; the next wait would end after the 3 s.
    assert sim.stats()["requests"]["balance"] == 2


def test_test_connection_has_a_short_default(sim):
    """test_connection answers within 30 s (TEST_CONNECTION_SECONDS) while balance throttles."""
    from airflow_provider_kling.api import TEST_CONNECTION_SECONDS

    sim.add_fault(fault="rate_limit", endpoint="balance", count=-1, retry_after=TEST_CONNECTION_SECONDS + 1)
    hook = KlingHook()
    try:
        finished, outcome, _ = _run_bounded(hook.test_connection, TEST_CONNECTION_SECONDS + SLACK)
    finally:
        hook.close()
    assert finished, "test_connection still waiting"
    ok, message = outcome
    assert not ok and "rate limit" in message.lower()
    assert sim.stats()["requests"]["balance"] == 1


@pytest.mark.parametrize(
    "spec",
    [{"retry_after": 0}, {"retry_after": -30, "retry_after_http_date": True}],
    ids=["zero", "past-date"],
)
def test_retry_after_zero_or_past_waits_the_backoff_sync(sim, spec):
    sim.add_fault(fault="rate_limit", endpoint="status", count=-1, **spec)
    hook = KlingHook()
    try:
        with pytest.raises(KlingRateLimitError):
            hook.get_task("kl_any", policy=RetryPolicy(deadline=time.time() + 3.5, backoff_base=0.01))
    finally:
        hook.close()
    # Waits of >= 1 s each: at most 4 requests in 3.5 s (without the floor: hundreds).
    assert 2 <= sim.stats()["requests"]["status"] <= 4


@pytest.mark.parametrize(
    "spec",
    [{"retry_after": 0}, {"retry_after": -30, "retry_after_http_date": True}],
    ids=["zero", "past-date"],
)
def test_retry_after_zero_or_past_waits_the_backoff_async(sim, spec):
    sim.add_fault(fault="rate_limit", endpoint="status", count=-1, **spec)

    async def poll():
        async with KlingHook() as hook:
            await hook.aget_task("kl_any", policy=RetryPolicy(deadline=time.time() + 3.5, backoff_base=0.01))

    with pytest.raises(KlingRateLimitError):
        asyncio.run(poll())
    assert 2 <= sim.stats()["requests"]["status"] <= 4


class _HeaderTrickler(LoopbackServer):
    """A loopback server that answers every connection with its status line one byte every 0.5 s."""

    def handle(self, conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
            if self.stop.wait(0.5):
                break
            conn.sendall(bytes([byte]))


def test_trickling_status_line_never_holds_a_sync_call_past_its_deadline(monkeypatch):
    from tests.network.conftest import use_connection

    with _HeaderTrickler() as server:
        use_connection(monkeypatch, f"http://127.0.0.1:{server.port}")
        hook = KlingHook()
        deadline = time.time() + 2
        try:
            finished, outcome, _ = _run_bounded(
                lambda: hook.get_task("kl_x", policy=RetryPolicy(deadline=deadline)), 2 + SLACK + 5
            )
        finally:
            hook.close()
        assert finished, "get_task still reading the status line"
        assert isinstance(outcome, KlingAPIError) and outcome.code == "timeout", outcome
        assert time.time() <= deadline + SLACK


def test_trickling_file_host_never_holds_a_download_past_its_deadline(sim, tmp_path):
    from tests.conftest import wait_terminal

    hook = KlingHook()
    try:
        task = wait_terminal(hook, submit_task(business_id="kl_trickle_file").id)
        sim.add_fault(fault="trickle", endpoint="files", count=-1, delay=1.0)
        deadline = time.time() + 3
        finished, outcome, _ = _run_bounded(
            lambda: hook.download_video(task, tmp_path / "v.mp4", policy=RetryPolicy(deadline=deadline)),
            3 + SLACK + 5,
        )
        assert finished, "download still running 5 s after deadline + slack"
        assert isinstance(outcome, KlingAPIError) and outcome.code == "timeout", outcome
        assert time.time() <= deadline + SLACK
        assert not (tmp_path / "v.mp4").exists()
    finally:
        hook.close()
    # The simulator logs a trickled answer when it ends (the client hung up): let it, so the log of
    # the next test starts clean.
    for _ in range(100):
        if len([r for r in sim.requests() if r["path"].startswith("/files/")]) >= 2:
            break
        time.sleep(0.1)
