"""The simulator in a process of its own (so the load a test puts on it never shares the test's CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import TEST_API_KEY


@contextmanager
def simulator_process(folder: Path, *args: str) -> Iterator[str]:
    """Start ``python -m airflow_provider_kling.simulator --port 0 *args``; yield its base URL."""
    port_file = folder / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kling.simulator", "--port", "0", "--port-file", str(port_file), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None and time.time() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(10)


def call(base: str, path: str, body: dict | None = None):
    """A plain API call with the test key (POST when ``body`` is given), outside the provider."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
