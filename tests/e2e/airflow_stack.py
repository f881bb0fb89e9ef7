"""Run a real Airflow 3 stack (api-server, scheduler, dag-processor, triggerer) for end-to-end tests.

Every component is its own subprocess in its own session/process group, started from a fresh temporary
``AIRFLOW_HOME`` with SQLite, LocalExecutor and (by default) ``parallelism=1``: one worker slot.

This module deliberately never imports Airflow: the test process talks to the stack through the REST API
(trigger / unpause) and reads the SQLite metadata database read-only (states, XCom, triggers), so it does
not depend on (or disturb) the in-process Airflow configuration of the unit tests.

Components are tracked by name. A second instance of a job component (an HA triggerer, a second
scheduler or dag-processor) is started under its own name, e.g.
``stack.start_component("triggerer", name="triggerer-b", args=["--capacity", "50"])``, and killed or
stopped by that name; it gets a log-server port of its own.

Typical use::

    stack = AirflowStack(dags_folder, env={"AIRFLOW_CONN_KLING_DEFAULT": uri})
    stack.start()
    try:
        run_id = stack.trigger_dag("my_dag")
        assert stack.wait_for_dag_run("my_dag", run_id) == "success"
    finally:
        stack.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
#: ``job.job_type`` of each component that runs a job loop (the api-server has none).
JOB_TYPES: dict[str, str] = {
    "scheduler": "SchedulerJob",
    "dag-processor": "DagProcessorJob",
    "triggerer": "TriggererJob",
}
#: Environment variable of the log-server port each component binds (a second instance needs another port).
LOG_SERVER_PORT_VARS: dict[str, str] = {
    "scheduler": "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "triggerer": "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
}
#: Key in ``/api/v2/monitor/health`` of each job component.
HEALTH_KEYS: dict[str, str] = {
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Environment variable set in every process of a stack (inherited by forks), used to find them all in /proc.
MARKER_VAR = "KLING_E2E_STACK_ID"

#: Settings that make a small stack react quickly. Each can be overridden by ``extra_config``.
FAST_CONFIG: dict[str, str] = {
    # scheduler loop and liveness
    "scheduler.scheduler_heartbeat_sec": "1",
    "scheduler.job_heartbeat_sec": "1",
    "scheduler.scheduler_idle_sleep_time": "0.5",
    "scheduler.scheduler_health_check_threshold": "15",
    # a killed task (or worker) is noticed after ~20 s instead of 300 s
    "scheduler.task_instance_heartbeat_timeout": "20",
    "scheduler.task_instance_heartbeat_timeout_detection_interval": "2",
    # defer(timeout=...) expiry is checked every 2 s
    "scheduler.trigger_timeout_check_interval": "2",
    "scheduler.orphaned_tasks_check_interval": "10",
    # parse everything at start, look for new files every 5 s, re-parse a file at most every 10 s
    "dag_processor.refresh_interval": "5",
    "dag_processor.min_file_process_interval": "10",
    "dag_processor.parsing_processes": "1",
    "dag_processor.print_stats_interval": "600",
    "dag_processor.health_check_threshold": "15",
    # triggerer: heartbeat every second; a SIGKILLed triggerer's triggers are re-assigned after ~10 s
    "triggerer.job_heartbeat_sec": "1",
    "triggerer.triggerer_health_check_threshold": "10",
    # misc
    "core.dags_are_paused_at_creation": "False",
    "core.load_examples": "False",
    "logging.colored_console_log": "False",
    "api.workers": "1",
}

#: stacks started and not yet stopped (strong references, so an unreferenced stack is still stopped at exit)
_LIVE_STACKS: set[AirflowStack] = set()


class StackError(RuntimeError):
    """The stack failed to start or a component misbehaved."""


class StackTimeout(StackError, TimeoutError):
    """A bounded wait on the stack ran out of time."""


def free_port() -> int:
    """A currently free TCP port on the loopback interface (there is a small race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Map ``{"section.key": v}``, ``{"section": {"key": v}}`` or ``{"AIRFLOW__S__K": v}`` to env vars."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            for sub, sub_value in value.items():
                out[f"AIRFLOW__{key.upper()}__{sub.upper()}"] = str(sub_value)
        elif key.startswith("AIRFLOW__"):
            out[key] = str(value)
        elif "." in key:
            section, option = key.split(".", 1)
            out[f"AIRFLOW__{section.upper()}__{option.upper()}"] = str(value)
        else:
            raise ValueError(f"config key {key!r}: use 'section.key', a nested dict or 'AIRFLOW__SECTION__KEY'")
    return out


def _child_setup() -> None:
    """In the child before exec: default SIGINT (a background shell may have set it to ignored, which
    slows Airflow's shutdown) and SIGTERM when the parent (the test process) dies, e.g. on SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _reset_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, sid) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # zombie: as good as gone
        return None
    return int(fields[1]), int(fields[2]), int(fields[3])


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _proc_has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 200 * lines))
            data = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


class _Component:
    """One process of the stack: ``airflow <kind> <args>`` under a unique ``name``."""

    def __init__(self, name: str, kind: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.args = list(args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.expected_running = False
        self.starts = 0
        #: the newest job id of this kind before the current process was spawned, and its own job id
        self.after_job_id = 0
        self.job_id: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class AirflowStack:
    """A real Airflow 3 deployment made of separate subprocesses, for end-to-end tests.

    :param dags_folder: folder the dag-processor parses (``[core] dags_folder``).
    :param env: extra environment variables for every component (e.g. ``AIRFLOW_CONN_KLING_DEFAULT``).
        Applied last, so they can also override anything the harness sets.
    :param parallelism: ``[core] parallelism``: LocalExecutor worker processes (= worker slots).
    :param extra_config: Airflow settings as ``{"section.key": value}``, ``{"section": {"key": value}}``
        or ``{"AIRFLOW__SECTION__KEY": value}``; override :data:`FAST_CONFIG`.
    :param component_args: extra command-line arguments per component started by :meth:`start`, e.g.
        ``{"triggerer": ["--capacity", "20"]}``.
    :param home: AIRFLOW_HOME to use (default: a new temporary directory, removed by :meth:`stop`).
    :param keep_home: keep the temporary home after :meth:`stop` (also when ``KLING_E2E_KEEP_HOME=1``).
    """

    def __init__(
        self,
        dags_folder: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        parallelism: int = 1,
        extra_config: Mapping[str, Any] | None = None,
        *,
        component_args: Mapping[str, Sequence[str]] | None = None,
        home: str | os.PathLike[str] | None = None,
        keep_home: bool | None = None,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        if not self.dags_folder.is_dir():
            raise ValueError(f"dags_folder {self.dags_folder} is not a directory")
        self.parallelism = parallelism
        self._own_home = home is None
        self.home = Path(home) if home else Path(tempfile.mkdtemp(prefix="kling-e2e-airflow-"))
        self.home.mkdir(parents=True, exist_ok=True)
        if keep_home is None:
            keep_home = os.environ.get("KLING_E2E_KEEP_HOME") == "1"
        self.keep_home = keep_home
        self.stack_logs = self.home / "stack-logs"
        self.stack_logs.mkdir(exist_ok=True)
        self.db_path = self.home / "airflow.db"
        self.stack_id = uuid.uuid4().hex
        self._marker = f"{MARKER_VAR}={self.stack_id}".encode()

        self.port = free_port()
        self.worker_log_port = free_port()
        self.trigger_log_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_password = uuid.uuid4().hex
        self.fernet_key = self._new_fernet_key()
        self._token: str | None = None

        self.bin_dir = Path(sys.executable).parent
        airflow_bin = self.bin_dir / "airflow"
        if not airflow_bin.exists():
            found = shutil.which("airflow")
            if not found:
                raise StackError(f"no 'airflow' executable next to {sys.executable} or on PATH")
            airflow_bin = Path(found)
        self.airflow_bin = str(airflow_bin)

        self.env = self._build_env(env or {}, extra_config or {})
        unknown = set(component_args or {}) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"component_args for unknown component(s) {sorted(unknown)}; expected {COMPONENTS}")
        self.components: dict[str, _Component] = {
            name: _Component(name, name, (component_args or {}).get(name, ())) for name in COMPONENTS
        }
        self.timings: dict[str, float] = {}
        #: every session id (= pid of a component at spawn) this stack ever created; orphans keep their sid
        self._sids: set[int] = set()
        self._stopped = False
        self._lock = threading.RLock()
        _LIVE_STACKS.add(self)

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _new_fernet_key() -> str:
        import base64

        return base64.urlsafe_b64encode(os.urandom(32)).decode()

    def _build_env(self, env: Mapping[str, str], extra_config: Mapping[str, Any]) -> dict[str, str]:
        # Start from the test process's environment minus everything Airflow: tests/conftest.py sets
        # AIRFLOW_HOME, DAGS_FOLDER, SQL_ALCHEMY_CONN and connections for the in-process tests.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_AIRFLOW")) and k not in ("PYTEST_CURRENT_TEST",)
        }
        path = base.get("PATH", "")
        base["PATH"] = f"{self.bin_dir}{os.pathsep}{path}" if path else str(self.bin_dir)
        base["PYTHONUNBUFFERED"] = "1"
        base[MARKER_VAR] = self.stack_id
        base.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__SECRET_KEY": os.urandom(32).hex(),
                "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            }
        )
        base.update(_config_env(FAST_CONFIG))
        base.update(_config_env(extra_config))
        base.update({k: str(v) for k, v in env.items()})
        return base

    def _write_password_file(self) -> None:
        # The simple auth manager only generates passwords for users missing from this file, so writing it
        # first gives the admin a password we know without scraping logs.
        path = self.home / "simple_auth_manager_passwords.json.generated"
        path.write_text(json.dumps({"admin": self.admin_password}) + "\n")

    def _popen(self, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: only use it from the main thread
        use_pdeathsig = threading.current_thread() is threading.main_thread()
        with log_path.open("ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} $ {' '.join(args)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                args,
                env={**self.env, **(env or {})},
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session + process group: kill the whole tree, never ours
                preexec_fn=_child_setup if use_pdeathsig else _reset_sigint,
            )
        self._sids.add(proc.pid)
        return proc

    def migrate(self, timeout: float = 120) -> None:
        """Create the metadata database (``airflow db migrate``)."""
        log_path = self.stack_logs / "db-migrate.log"
        proc = self._popen([self.airflow_bin, "db", "migrate"], log_path)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_session(proc.pid, signal.SIGKILL)
            proc.wait(5)
            raise StackTimeout(f"airflow db migrate took > {timeout}s\n{_tail(log_path, 40)}") from None
        if rc != 0:
            raise StackError(f"airflow db migrate failed (rc={rc})\n{_tail(log_path, 60)}")

    def start(self, timeout: float = 120, wait_for_dags: bool | Iterable[str] = True) -> AirflowStack:
        """Migrate the DB, start all four components and wait until they are healthy and DAGs are parsed.

        :param wait_for_dags: ``True``: wait until every DAG-looking file in the dags folder was parsed
            (an import error raises); an iterable of dag ids: wait for those; ``False``: do not wait.
        """
        if self._stopped:
            raise StackError("this stack was stopped; create a new one")
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        try:
            self._write_password_file()
            self.migrate(timeout=max(1.0, deadline - time.monotonic()))
            self.timings["migrate"] = time.monotonic() - t0
            for name in COMPONENTS:
                self.start_component(name, wait=False)
            self.wait_healthy(timeout=max(1.0, deadline - time.monotonic()))
            self.timings["healthy"] = time.monotonic() - t0
            if wait_for_dags:
                dag_ids = None if wait_for_dags is True else list(wait_for_dags)
                self.wait_for_dags_parsed(dag_ids, timeout=max(1.0, deadline - time.monotonic()))
                self.timings["dags_parsed"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    # ------------------------------------------------------------ components

    def start_component(
        self,
        kind: str,
        wait: bool = True,
        timeout: float = 60,
        *,
        name: str | None = None,
        args: Sequence[str] | None = None,
    ) -> int:
        """Start one component (again); with ``wait``, block until it is up (new job heartbeating / API up).

        :param kind: the Airflow command (one of :data:`COMPONENTS`).
        :param name: the component's name (default ``kind``). A new name starts another instance of
            ``kind`` next to the first (not for the api-server, which owns the stack's URL); it gets
            its own log-server port. Start it with ``wait`` before starting a third instance of the
            same kind, so :meth:`job_id` tells their jobs apart.
        :param args: extra arguments after ``airflow <kind>`` (default: those of the last start).
        :returns: the pid of the new process.
        """
        if kind not in COMPONENTS:
            raise ValueError(f"unknown component {kind!r}; expected one of {COMPONENTS}")
        name = name or kind
        with self._lock:
            comp = self.components.get(name)
            if comp is None:
                if kind == "api-server":
                    raise ValueError("a second api-server is not supported (it would need the stack's port)")
                port_var = LOG_SERVER_PORT_VARS.get(kind)
                comp = self.components[name] = _Component(
                    name, kind, env={port_var: str(free_port())} if port_var else None
                )
            elif comp.kind != kind:
                raise ValueError(f"component {name!r} is a {comp.kind}, not a {kind}")
            if comp.running():
                raise StackError(f"{name} is already running (pid {comp.pid})")
            if args is not None:
                comp.args = list(args)
            comp.after_job_id = self._max_job_id(kind)
            comp.job_id = None
            comp.log_path = self.stack_logs / f"{name}.log"
            comp.proc = self._popen([self.airflow_bin, kind, *comp.args], comp.log_path, comp.env)
            comp.expected_running = True
            comp.starts += 1
        if wait:
            self.wait_component_up(name, after_job_id=comp.after_job_id, timeout=timeout)
        return comp.proc.pid

    def wait_component_up(self, name: str, after_job_id: int = 0, timeout: float = 60) -> None:
        """Wait until ``name`` is serving: the API answers, or a job newer than ``after_job_id`` is alive."""
        kind = self._component(name).kind
        if kind == "api-server":
            self.wait_for(lambda: self._api_health() is not None, timeout, 0.25, what="api-server answering")
            return
        job_type = JOB_TYPES[kind]

        def up() -> bool:
            row = self._query_one(
                "SELECT id FROM job WHERE job_type = ? AND state = 'running' AND id > ? "
                "AND latest_heartbeat IS NOT NULL ORDER BY id DESC LIMIT 1",
                (job_type, after_job_id),
            )
            return row is not None

        self.wait_for(up, timeout, 0.25, what=f"{name} job running")

    def job_id(self, name: str) -> int | None:
        """The ``job.id`` of a job component's current process (= ``trigger.triggerer_id`` for a
        triggerer): the first job of its kind created after it was spawned; ``None`` until it exists."""
        comp = self._component(name)
        if comp.job_id is None and comp.proc is not None and comp.kind in JOB_TYPES:
            row = self._query_one(
                "SELECT MIN(id) FROM job WHERE job_type = ? AND id > ?", (JOB_TYPES[comp.kind], comp.after_job_id)
            )
            comp.job_id = row[0] if row else None
        return comp.job_id

    def ensure_running(self, timeout: float = 60) -> None:
        """Start again any component that is not running (e.g. after a test killed it) and wait until healthy."""
        for name, comp in list(self.components.items()):
            if not comp.running():
                self.start_component(comp.kind, wait=True, timeout=timeout, name=name)
        self.wait_healthy(timeout=timeout)

    def stop_component(self, name: str, grace: float = 15.0, force_after: float | None = None) -> int | None:
        """Stop a component: SIGTERM, a second SIGTERM after ``force_after`` s (``None``: never), SIGKILL of
        its whole session after ``grace`` s. Returns its exit code.

        Measured: dag-processor 0.2 s, scheduler 0.7 s, api-server 1.5 s, triggerer 1.2 s but in about one
        stop out of two ~10.7 s: its supervisor does not notice that the runner subprocess exited and
        only moves on when its own 10 s escalation timer fires (a second SIGTERM does not shorten that).
        Pass a small ``grace`` for a fast, forced stop.
        """
        comp = self._component(name)
        comp.expected_running = False
        if comp.proc is None:
            return None
        self._terminate([comp], grace, force_after)
        return comp.proc.returncode

    def restart(self, name: str, grace: float = 15.0, force_after: float | None = None, timeout: float = 60) -> int:
        """:meth:`stop_component` then :meth:`start_component` (waiting until it is up); return the new pid."""
        self.stop_component(name, grace=grace, force_after=force_after)
        return self.start_component(self._component(name).kind, wait=True, timeout=timeout, name=name)

    def kill(self, name: str, sig: int = signal.SIGKILL, tree: bool = True, timeout: float = 15) -> None:
        """Send ``sig`` to a component, by default to every process of its session (task runners included).

        With ``tree=False`` only the component's main process gets the signal (its children are orphaned:
        what happens to them is then up to Airflow). Waits until the main process has exited if ``sig`` is
        fatal by default (SIGKILL/SIGTERM/SIGINT).
        """
        comp = self._component(name)
        if not comp.running():
            raise StackError(f"{name} is not running")
        comp.expected_running = False
        assert comp.proc is not None
        if tree:
            self._kill_session(comp.proc.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(comp.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                comp.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StackTimeout(f"{name} (pid {comp.proc.pid}) still alive {timeout}s after {sig!r}") from None

    def _component(self, name: str) -> _Component:
        try:
            return self.components[name]
        except KeyError:
            raise ValueError(f"unknown component {name!r}; known: {sorted(self.components)}") from None

    # ------------------------------------------------------------- shutdown

    def _session_members(self, sid: int) -> list[int]:
        out = []
        for pid in _all_pids():
            st = _proc_stat(pid)
            if st and st[2] == sid:
                out.append(pid)
        return out

    def _kill_session(self, sid: int, sig: int) -> None:
        for pid in self._session_members(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _stack_pids(self) -> list[int]:
        """Live processes of this stack: members of any session it created, plus anything carrying its
        marker variable (setproctitle clobbers /proc/<pid>/environ, so the marker alone is not enough)."""
        me = os.getpid()
        out = []
        for pid in _all_pids():
            if pid == me:
                continue
            st = _proc_stat(pid)
            if st is None:
                continue
            if st[2] in self._sids or _proc_has_marker(pid, self._marker):
                out.append(pid)
        return out

    def _terminate(self, comps: list[_Component], grace: float, force_after: float | None) -> None:
        """SIGTERM each component's main process; SIGTERM again after ``force_after`` s (Airflow's "second
        signal": the scheduler stops waiting for running tasks, the triggerer SIGKILLs its runner); after
        ``grace`` s SIGKILL its whole session.

        The api-server goes last: a scheduler shutting down waits for its running tasks, which need the
        Execution API to finish (otherwise they retry against a dead server until killed).
        """
        t0 = time.monotonic()
        deadline = t0 + grace
        live = [c for c in comps if c.proc is not None]
        first = [c for c in live if c.kind != "api-server"]
        last = [c for c in live if c.kind == "api-server"]
        exited: dict[str, float] = {}
        for phase in (first, last):
            signalled_at = time.monotonic()
            forced: set[str] = set()
            for comp in phase:
                assert comp.proc is not None
                if comp.proc.poll() is None:
                    # only the main process, as a container runtime would: Airflow forwards the signal to its
                    # own children (signalling the whole group races with that and can hang the triggerer)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(comp.proc.pid, signal.SIGTERM)
            # the api-server keeps serving until the others are gone (at most half the grace)
            phase_deadline = t0 + grace / 2 if (phase is first and last) else deadline
            while True:
                now = time.monotonic()
                for comp in live:
                    assert comp.proc is not None
                    if comp.name not in exited and comp.proc.poll() is not None:
                        exited[comp.name] = round(now - t0, 2)
                if all(c.name in exited for c in phase) or now >= phase_deadline:
                    break
                if force_after is not None and now - signalled_at >= force_after:
                    for comp in phase:
                        assert comp.proc is not None
                        if comp.name not in exited and comp.name not in forced:
                            forced.add(comp.name)
                            self.timings[f"forced:{comp.name}"] = round(now - t0, 2)
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(comp.proc.pid, signal.SIGTERM)
                time.sleep(0.05)
        for comp in live:
            assert comp.proc is not None
            # seconds until it exited after SIGTERM; -1: it needed SIGKILL
            self.timings[f"stop:{comp.name}"] = exited.get(comp.name, -1.0)
            # anything left in the session (task runners have their own group but stay in the session)
            self._kill_session(comp.proc.pid, signal.SIGKILL)
            if comp.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(comp.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                comp.proc.wait(timeout=5)

    def stop(self, grace: float = 5.0, force_after: float | None = 2.0) -> None:
        """Stop every process of the stack (idempotent, safe to call from finalizers and atexit)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for comp in self.components.values():
            comp.expected_running = False
        t0 = time.monotonic()
        try:
            self._terminate(list(self.components.values()), grace, force_after)
        finally:
            # Last sweep: anything that inherited our marker (e.g. orphaned task runners, processes that
            # called setsid) is killed, and we wait until it is really gone.
            deadline = time.monotonic() + 10
            while True:
                left = self._stack_pids()
                if not left or time.monotonic() > deadline:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            _LIVE_STACKS.discard(self)
            self.timings["stop"] = round(time.monotonic() - t0, 2)
            with contextlib.suppress(OSError):
                (self.stack_logs / "timings.json").write_text(json.dumps(self.timings, indent=1))
            if self._own_home and not self.keep_home:
                shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- waiting

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 60,
        interval: float = 0.5,
        what: str | None = None,
        fail_on_dead: bool = True,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy and return that value.

        Raises :class:`StackTimeout` after ``timeout`` seconds, and :class:`StackError` at once if a component
        that should be running has exited (``fail_on_dead``), both with the tails of the component logs.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        last_exc: BaseException | None = None
        while True:
            try:
                last = predicate()
                last_exc = None
            except (sqlite3.Error, OSError) as exc:  # DB busy / not created yet / connection refused
                last, last_exc = None, exc
            if last:
                return last
            if fail_on_dead:
                dead = [
                    c for c in self.components.values() if c.expected_running and c.proc and c.proc.poll() is not None
                ]
                if dead:
                    names = ", ".join(f"{c.name} (rc={c.proc.returncode})" for c in dead if c.proc)
                    raise StackError(
                        f"while waiting for {what or predicate!r}: component(s) exited: {names}\n" + self.diagnostics()
                    )
            if time.monotonic() >= deadline:
                detail = f"last value: {last!r}" + (f", last error: {last_exc!r}" if last_exc else "")
                raise StackTimeout(
                    f"timed out after {timeout}s waiting for {what or predicate!r} ({detail})\n" + self.diagnostics()
                )
            time.sleep(interval)

    def wait_healthy(self, timeout: float = 90) -> dict[str, Any]:
        """Wait until /api/v2/monitor/health reports scheduler, triggerer and dag-processor healthy."""

        def healthy() -> dict[str, Any] | None:
            health = self._api_health()
            if not health:
                return None
            ok = all((health.get(key) or {}).get("status") == "healthy" for key in HEALTH_KEYS.values())
            return health if ok and health.get("metadatabase", {}).get("status") == "healthy" else None

        return self.wait_for(healthy, timeout, 0.5, what="all components healthy")

    def wait_for_dags_parsed(self, dag_ids: Iterable[str] | None = None, timeout: float = 60) -> list[str]:
        """Wait until the DAGs are parsed and serialized; return the parsed dag ids.

        With ``dag_ids=None``, every ``*.py`` file in the dags folder that passes Airflow's "might contain a
        DAG" heuristic must have produced a serialized DAG; name helper modules without DAGs ``_*.py`` (or
        pass ``dag_ids``). An import error in one of those files (in any file, when ``dag_ids`` is given)
        raises at once with its traceback.
        """
        wanted_ids = set(dag_ids) if dag_ids is not None else None
        wanted_files = None if wanted_ids is not None else self._dag_files()
        if not wanted_ids and not wanted_files:
            return []

        def parsed() -> list[str] | None:
            errors = self._query("SELECT filename, stacktrace FROM import_error")
            relevant = [
                (f, s)
                for f, s in errors
                if wanted_files is None or f in wanted_files or str(self.dags_folder / f) in wanted_files
            ]
            if relevant:
                text = "\n".join(f"--- {f}\n{s}" for f, s in relevant)
                raise StackError(f"DAG import errors:\n{text}")
            rows = self._query(
                "SELECT d.dag_id, d.relative_fileloc FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id "
                "WHERE NOT d.is_stale"
            )
            ids = {r[0] for r in rows}
            if wanted_ids is not None:
                return sorted(ids) if wanted_ids <= ids else None
            files = {r[1] for r in rows}
            assert wanted_files is not None
            return sorted(ids) if wanted_files <= files else None

        return self.wait_for(parsed, timeout, 0.5, what=f"DAGs parsed ({sorted(wanted_ids or wanted_files or [])})")

    def _dag_files(self) -> set[str]:
        """DAG-looking files of the dags folder (helpers named ``_*.py`` or under ``_*/`` are skipped)."""
        out = set()
        for path in self.dags_folder.rglob("*.py"):
            rel_parts = path.relative_to(self.dags_folder).parts
            if "__pycache__" in rel_parts or any(part.startswith("_") for part in rel_parts):
                continue
            content = path.read_bytes().lower()
            if b"airflow" in content and (b"dag" in content or b"asset" in content):
                out.add(str(path.relative_to(self.dags_folder)))
        return out

    # ------------------------------------------------------------- REST API

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._get_token()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise StackError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def _get_token(self) -> str:
        if self._token is None:
            resp = self._request(
                "POST", "/auth/token", {"username": "admin", "password": self.admin_password}, auth=False
            )
            self._token = resp["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the public REST API as admin, e.g. ``stack.api("GET", "/api/v2/dags")``."""
        return self._request(method, path, body)

    def _api_health(self) -> dict[str, Any] | None:
        try:
            return self._request("GET", "/api/v2/monitor/health", auth=False, timeout=5)
        except (OSError, StackError, ValueError):
            return None

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{urllib.parse.quote(dag_id)}", {"is_paused": False})

    def trigger_dag(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: str | None = None,
    ) -> str:
        """Unpause and trigger ``dag_id`` through the REST API; return the run id.

        REST (about 20 ms) rather than ``airflow dags trigger`` (about 2 s of interpreter start-up per call).
        """
        self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        resp = self._request("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns", body)
        return resp["dag_run_id"]

    # ------------------------------------------------------------- database

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        return conn

    def _query(self, sql: str, params: tuple[Any, ...] = (), as_dicts: bool = False) -> list[Any]:
        """Run a read-only query on the metadata DB (retries briefly if it is locked)."""
        for attempt in range(20):
            try:
                conn = self._connect()
                try:
                    if as_dicts:
                        conn.row_factory = sqlite3.Row
                        return [dict(row) for row in conn.execute(sql, params).fetchall()]
                    return conn.execute(sql, params).fetchall()
                finally:
                    conn.close()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 19:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def _query_one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def query(self, sql: str, params: tuple[Any, ...] = (), as_dicts: bool = False) -> list[Any]:
        """Read-only SQL on the metadata DB (tuples, or dicts keyed by column), for anything else."""
        return self._query(sql, params, as_dicts)

    def _max_job_id(self, kind: str) -> int:
        if kind not in JOB_TYPES or not self.db_path.exists():
            return 0
        try:
            row = self._query_one("SELECT MAX(id) FROM job WHERE job_type = ?", (JOB_TYPES[kind],))
        except sqlite3.Error:
            return 0
        return (row[0] if row else None) or 0

    @staticmethod
    def _ti_key(task_id: str, map_index: int) -> str:
        return task_id if map_index < 0 else f"{task_id}[{map_index}]"

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id or "task_id[map_index]": state}`` of a run (``None`` = no state yet)."""
        rows = self._query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        )
        return {self._ti_key(t, m): s for t, m, s in rows}

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """The ``task_instance`` row as a dict (state, try_number, pid, hostname, next_method, ...)."""
        rows = self._query(
            "SELECT * FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
            as_dicts=True,
        )
        return rows[0] if rows else None

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        row = self._query_one("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return row[0] if row else None

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 120, interval: float = 0.5) -> str:
        """Wait until the run is ``success`` or ``failed``; return that state."""
        return self.wait_for(
            lambda: s if (s := self.dag_run_state(dag_id, run_id)) in TERMINAL_RUN_STATES else None,
            timeout,
            interval,
            what=f"dag run {dag_id}/{run_id} finished",
        )

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: str | Iterable[str],
        map_index: int = -1,
        timeout: float = 60,
        interval: float = 0.25,
    ) -> str:
        wanted = {states} if isinstance(states, str) else set(states)
        key = self._ti_key(task_id, map_index)
        return self.wait_for(
            lambda: s if (s := self.task_states(dag_id, run_id).get(key)) in wanted else None,
            timeout,
            interval,
            what=f"{dag_id}/{run_id}/{key} in {sorted(wanted)}",
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The XCom value (JSON-decoded as stored by Airflow 3); raises ``KeyError`` if there is none."""
        row = self._query_one(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? AND map_index = ?",
            (dag_id, run_id, task_id, key, map_index),
        )
        if row is None:
            raise KeyError(f"no XCom {key!r} for {dag_id}/{run_id}/{self._ti_key(task_id, map_index)}")
        value = row[0]
        if isinstance(value, bytes):
            value = value.decode()
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return value

    def trigger_rows(self, decrypt: bool = True) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table.

        Each dict has ``id``, ``classpath``, ``triggerer_id``, ``created_date``, ``kwargs_stored`` (the
        column exactly as stored) and, with ``decrypt``, ``kwargs_plain`` (the JSON text, decrypted if it
        was encrypted: handy for ``"secret" not in ...``) and ``kwargs`` (that JSON parsed, still in Airflow's
        serde form). Measured on 3.3.2: kwargs of triggers created by a task's ``defer()`` are stored as
        **plain JSON** (the Execution API stores what the worker sends, unencrypted), despite a Fernet key.
        Rows are deleted soon after the trigger fires, so inspect them while the task is deferred.
        """
        rows = self._query("SELECT id, classpath, kwargs, triggerer_id, created_date FROM trigger ORDER BY id")
        out = []
        for tid, classpath, stored, triggerer_id, created in rows:
            item: dict[str, Any] = {
                "id": tid,
                "classpath": classpath,
                "kwargs_stored": stored,
                "triggerer_id": triggerer_id,
                "created_date": created,
            }
            if decrypt:
                item["kwargs_plain"] = self.decrypt(stored)
                try:
                    item["kwargs"] = json.loads(item["kwargs_plain"])
                except ValueError:
                    item["kwargs"] = None
            out.append(item)
        return out

    def decrypt(self, stored: str) -> str:
        """Decrypt a Fernet-encrypted column value (trigger kwargs, connection passwords) of this stack."""
        if stored.startswith("{"):  # stored unencrypted
            return stored
        from cryptography.fernet import Fernet

        return Fernet(self.fernet_key.encode()).decrypt(stored.encode()).decode()

    # ------------------------------------------------------------- logs

    def task_log_dir(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
        path = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return path / f"map_index={map_index}" if map_index >= 0 else path

    def task_log(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int = 1,
        map_index: int = -1,
        include_trigger: bool = False,
    ) -> str:
        """Text of the task's log file for ``try_number`` ('' if none yet); with ``include_trigger`` the
        triggerer's log files for that try (``attempt=N.log.trigger.<job>.log``) are appended."""
        folder = self.task_log_dir(dag_id, run_id, task_id, map_index)
        main = folder / f"attempt={try_number}.log"
        parts = [main.read_text(errors="replace")] if main.exists() else []
        if include_trigger:
            for path in sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log")):
                parts.append(f"\n===== {path.name}\n" + path.read_text(errors="replace"))
        return "".join(parts)

    def all_logs_text(self) -> str:
        """Every log file of the stack (task, trigger, component, dag-processor) concatenated: for leak checks."""
        chunks = []
        for path in sorted((self.home / "logs").rglob("*")):
            if path.is_file():
                chunks.append(f"\n===== {path}\n" + path.read_text(errors="replace"))
        for path in sorted(self.stack_logs.glob("*.log")):
            chunks.append(f"\n===== {path}\n" + path.read_text(errors="replace"))
        return "".join(chunks)

    def component_log(self, name: str) -> str:
        comp = self._component(name)
        return comp.log_path.read_text(errors="replace") if comp.log_path and comp.log_path.exists() else ""

    def diagnostics(self, lines: int = 40) -> str:
        """Status and log tails of every component (used in timeout errors)."""
        out = []
        for comp in self.components.values():
            if comp.proc is None:
                status = "not started"
            elif comp.proc.poll() is None:
                status = f"running pid={comp.proc.pid}"
            else:
                status = f"exited rc={comp.proc.returncode}"
            out.append(f"----- {comp.name}: {status}")
            if comp.log_path:
                out.append(_tail(comp.log_path, lines))
        migrate_log = self.stack_logs / "db-migrate.log"
        if migrate_log.exists() and not any(c.proc for c in self.components.values()):
            out.append("----- db migrate\n" + _tail(migrate_log, lines))
        return "\n".join(out)

    # ------------------------------------------------------------- processes

    def pids(self) -> list[dict[str, Any]]:
        """Every live process of this stack.

        Each dict: ``pid``, ``ppid``, ``pgid``, ``sid``, ``component`` (whose session it is in, or None),
        ``role`` and ``cmdline`` (the process title). Roles:

        - ``"component"``: the main process of a component;
        - ``"worker"``: a LocalExecutor worker (``airflow worker -- LocalExecutor: <idle>`` or ``...: <ti>``);
          it is also the *supervisor* of the task it runs;
        - ``"task"``: the forked task runner (``airflow worker -- <ti uuid>``), = ``task_instance.pid``;
        - ``"log-server"``: ``airflow serve-logs`` of the scheduler and of the triggerer;
        - ``"trigger-runner"``: the triggerer's async runner subprocess (where triggers' ``run()`` executes);
        - ``"other"``: e.g. short-lived DAG file parsing processes of the dag-processor.
        """
        sessions = {c.pid: c for c in self.components.values() if c.pid is not None and c.running()}
        out = []
        for pid in self._stack_pids():
            st = _proc_stat(pid)
            if st is None:
                continue
            ppid, pgid, sid = st
            cmd = _proc_cmdline(pid)
            if pid in sessions:
                role = "component"
            elif cmd.startswith("airflow worker -- LocalExecutor"):
                role = "worker"
            elif cmd.startswith("airflow worker -- "):
                role = "task"
            elif cmd.startswith("airflow serve-logs"):
                role = "log-server"
            elif sid in sessions and sessions[sid].kind == "triggerer" and ppid == sid:
                role = "trigger-runner"
            else:
                role = "other"
            out.append(
                {
                    "pid": pid,
                    "ppid": ppid,
                    "pgid": pgid,
                    "sid": sid,
                    "component": sessions[sid].name if sid in sessions else None,
                    "role": role,
                    "cmdline": cmd,
                }
            )
        return sorted(out, key=lambda p: p["pid"])

    def worker_pids(self) -> list[int]:
        """LocalExecutor worker processes (``parallelism`` of them once the scheduler has started)."""
        return [p["pid"] for p in self.pids() if p["role"] == "worker"]

    def task_pid(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int | None:
        """PID of the process running the task's code (``task_instance.pid``), if it is alive.

        It is the task runner forked by the worker's supervisor, in its own process group; its parent
        (see :meth:`supervisor_pid`) is the LocalExecutor worker. ``None`` while the task is not running.
        """
        ti = self.task_instance(dag_id, run_id, task_id, map_index)
        if not ti or not ti.get("pid"):
            return None
        pid = int(ti["pid"])
        st = _proc_stat(pid)
        if st is None or (st[2] not in self._sids and not _proc_has_marker(pid, self._marker)):
            return None
        # guard against a recycled pid: the task runner's title is "airflow worker -- <ti uuid>" (the DB
        # stores the uuid without dashes)
        title = _proc_cmdline(pid)
        ti_uuid = str(ti.get("id") or "").replace("-", "")
        if title.startswith("airflow worker -- ") and ti_uuid not in title.replace("-", ""):
            return None
        return pid

    def supervisor_pid(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int | None:
        """PID of the LocalExecutor worker supervising the task (parent of :meth:`task_pid`)."""
        pid = self.task_pid(dag_id, run_id, task_id, map_index)
        st = _proc_stat(pid) if pid else None
        return st[0] if st else None

    def wait_for_task_pid(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, timeout: float = 60
    ) -> int:
        return self.wait_for(
            lambda: self.task_pid(dag_id, run_id, task_id, map_index),
            timeout,
            0.2,
            what=f"pid of running task {dag_id}/{run_id}/{self._ti_key(task_id, map_index)}",
        )

    def kill_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        sig: int = signal.SIGKILL,
        target: str = "task",
        timeout: float = 60,
    ) -> int:
        """Wait until the task runs, then send ``sig`` to its process; return the pid signalled.

        ``target="task"``: the task runner (``task_instance.pid``). Measured with SIGKILL: its supervisor
        sees it die at once and the TI fails (or goes ``up_for_retry``) within ~0.3 s; the worker survives.
        ``target="supervisor"``: the LocalExecutor worker supervising it. The task runner is orphaned and
        keeps running the task's code; nobody heartbeats, so the scheduler fails the TI after
        ``[scheduler] task_instance_heartbeat_timeout`` (20 s here, measured 19.3 s); the executor spawns a
        new worker only when it next has work queued.
        """
        pid = self.wait_for_task_pid(dag_id, run_id, task_id, map_index, timeout=timeout)
        if target == "supervisor":
            st = _proc_stat(pid)
            if st is None:
                raise StackError(f"task process {pid} exited before its supervisor could be found")
            pid = st[0]
        elif target != "task":
            raise ValueError("target must be 'task' or 'supervisor'")
        os.kill(pid, sig)
        return pid

    def memory(self) -> dict[str, int]:
        """Summed RSS and PSS (kB) over all processes of the stack right now."""
        pids = self._stack_pids()
        return {
            "processes": len(pids),
            "rss_kb": sum(_rss_kb(p) for p in pids),
            "pss_kb": sum(_pss_kb(p) for p in pids),
        }


@atexit.register
def _stop_all_stacks() -> None:
    for stack in list(_LIVE_STACKS):
        with contextlib.suppress(Exception):
            stack.stop(grace=3)
