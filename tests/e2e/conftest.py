"""Fixtures for end-to-end tests against a real Airflow stack (see ``airflow_stack.py``).

* ``KLING_SKIP_E2E=1`` skips every test that uses the stack.
* ``KLING_E2E_KEEP_HOME=1`` keeps the stack's temporary AIRFLOW_HOME (logs, DB); it is also kept, and its
  path printed, when a test in the session failed.
* Override ``e2e_stack_env`` / ``e2e_stack_config`` (e.g. in this file) to give the stack a connection
  (``AIRFLOW_CONN_KLING_DEFAULT``) or other settings.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from .airflow_stack import AirflowStack

E2E_DIR = Path(__file__).resolve().parent
DAGS_FOLDER = E2E_DIR / "dags"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        item.session.stash[_FAILED] = True
    return report


_FAILED = pytest.StashKey[bool]()


def skip_reason() -> str | None:
    if os.environ.get("KLING_SKIP_E2E") == "1":
        return "end-to-end Airflow stack disabled by KLING_SKIP_E2E=1"
    if not sys.platform.startswith("linux"):
        return "the e2e Airflow stack harness needs Linux (/proc, process sessions)"
    return None


@pytest.fixture(scope="session")
def e2e_stack_env(simulator) -> dict[str, str]:
    """Every stack component talks to the session's simulator with the recognisable test key."""
    from tests.conftest import connection_uri

    return {"AIRFLOW_CONN_KLING_DEFAULT": connection_uri(simulator.base_url)}


@pytest.fixture(scope="session")
def e2e_stack_config() -> dict[str, str]:
    """Extra Airflow settings (``{"section.key": value}``) on top of the harness's fast defaults."""
    return {}


@pytest.fixture(scope="session")
def airflow_stack(request: pytest.FixtureRequest, e2e_stack_env, e2e_stack_config):
    """One real Airflow stack (api-server, scheduler, dag-processor, triggerer; parallelism=1) per session.

    Tests that kill or stop a component should call ``airflow_stack.ensure_running()`` afterwards (or at
    their start) so later tests get a complete stack.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)

    stack = AirflowStack(DAGS_FOLDER, env=e2e_stack_env, parallelism=1, extra_config=e2e_stack_config)
    # pytest runs finalizers on KeyboardInterrupt; make SIGTERM behave the same so the stack is stopped.
    # (On SIGKILL of pytest the components get SIGTERM through PR_SET_PDEATHSIG instead.)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def _on_sigterm(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _on_sigterm)

    def _finish() -> None:
        try:
            if request.session.stash.get(_FAILED, False):
                stack.keep_home = True
                sys.stderr.write(f"\n[e2e] a test failed: Airflow home kept at {stack.home}\n")
            stack.stop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    request.addfinalizer(_finish)
    stack.start(timeout=180)
    return stack
