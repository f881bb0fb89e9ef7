"""Shared pieces of the benchmarks: a simulator in its own process, small HTTP helpers, results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

KEY = "sk-bench-key"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One measured figure next to its target."""

    name: str
    value: float | str
    unit: str
    target: str
    met: bool | None  # None: reported, no target

    def line(self) -> str:
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        verdict = {True: "MET", False: "MISSED", None: "-"}[self.met]
        return f"{self.name:<58} {value:>10} {self.unit:<10} target {self.target:<14} {verdict}"


@contextmanager
def simulator(*args: str):
    """``kling-simulator`` on a free port in its own process (its CPU is not ours); yields the base URL."""
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kling.simulator", "--port", "0", "--port-file", str(port_file), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("simulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(10)


def call(base: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def create(base: str, prompt: str, business_id: str) -> str:
    body = {
        "model": "kling-v3",
        "prompt": prompt,
        "mode": "std",
        "duration": 5,
        "aspect_ratio": "16:9",
        "audio": False,
        "client_business_id": business_id,
    }
    return call(base, "/v1/videos/generations", body)["id"]


def use_connection(base: str, **extra) -> None:
    os.environ["AIRFLOW_CONN_KLING_DEFAULT"] = json.dumps(
        {"conn_type": "kling", "host": base, "password": KEY, "extra": extra}
    )


def isolated_airflow_home() -> None:
    home = tempfile.mkdtemp(prefix="kling-bench-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def child_env(base: str, **extra) -> dict[str, str]:
    """Environment of a measuring child process: its own AIRFLOW_HOME, no examples, the Kling connection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
    env.update(
        AIRFLOW_HOME=tempfile.mkdtemp(prefix="kling-bench-home-"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_KLING_DEFAULT=json.dumps({"conn_type": "kling", "host": base, "password": KEY, "extra": extra}),
        PYTHONPATH=str(ROOT),
    )
    return env


def run_child(module: str, spec: dict, env: dict[str, str], timeout: float = 600) -> dict:
    """Run ``python -m module --child SPEC`` in a fresh process (its CPU, RSS and sockets are the
    measurement, nothing else's); return the JSON it prints last."""
    spec_file = Path(tempfile.mkdtemp(prefix="kling-bench-spec-")) / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, "-m", module, "--child", str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} child failed (rc={out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
