"""Per-key accounts and all mutable simulator state.

Everything mutable lives in one :class:`SimState` guarded by one :class:`threading.Lock`, so the
tests can reset it, queue faults and read counters from another thread while the server runs.
A task's progress is derived from its creation time on every request (there is no worker).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .config import SimulatorConfig
from .faults import FaultQueue, FaultSpec, Quota
from .tasks import FAILURES, Task, new_task_id, outcome_for, parse_markers, task_cost
from .validation import CreateRequest

CREDITS_PER_USD = 200
ENDPOINTS = ("create", "status", "upload", "balance", "files")


def key_hash(key: str) -> str:
    """The only form in which an API key is ever kept: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Account:
    """Everything the simulator keeps for one API key (a "user")."""

    credits: int
    used: int = 0
    tasks: dict[str, Task] = field(default_factory=dict)
    business: dict[str, Task] = field(default_factory=dict)
    prompt_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    quotas: dict[str, Quota] = field(default_factory=dict)


class SimState:
    """All mutable simulator state behind one lock.

    :param config: the initial configuration; its ``faults`` are queued now.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.config = config or SimulatorConfig()
        self.started = time.time()
        self.open_connections = 0
        self.in_flight = 0
        self._status_gate: tuple[int, asyncio.Semaphore] | None = None
        self._clear()
        for spec in self.config.faults or ():
            self.add_faults(spec)

    def _clear(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tasks: dict[str, Task] = {}
        self.uploads: dict[str, tuple[bytes, str]] = {}
        self.faults = FaultQueue()
        self.counters: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults_fired: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=50_000)
        self._pending_refunds: list[Task] = []
        self._second, self._second_count, self.rps_max = 0, 0, 0
        self.max_connections, self.max_in_flight = self.open_connections, self.in_flight

    # -- control -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget tasks, uploads, faults, counters, credits and the request log (config is kept)."""
        with self._lock:
            self._clear()

    def set_config(self, **changes: Any) -> dict[str, Any]:
        """Apply config changes (validated); quota buckets restart. Returns the public config."""
        with self._lock:
            self.config = self.config.updated(**changes)
            for account in self.accounts.values():
                account.quotas.clear()
            return self.config.public()

    def add_faults(self, *specs: FaultSpec | dict[str, Any] | str) -> list[dict[str, Any]]:
        """Queue fault specs (objects, dicts or CLI strings); all are validated before any is queued."""
        parsed = [
            spec
            if isinstance(spec, FaultSpec)
            else FaultSpec.parse(spec)
            if isinstance(spec, str)
            else FaultSpec.from_dict(spec)
            for spec in specs
        ]
        with self._lock:
            for spec in parsed:
                self.faults.add(spec)
            return self.faults.to_list()

    def list_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.faults.to_list()

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def take_fault(self, endpoint: str) -> FaultSpec | None:
        """Fire the next queued fault for ``endpoint``, if any, and count it."""
        with self._lock:
            spec = self.faults.take(endpoint)
            if spec is not None:
                self.faults_fired[spec.fault] += 1
                if spec.fault == "rate_limit":
                    self.counters["rate_limited"] += 1
            return spec

    # -- bookkeeping ---------------------------------------------------------------------

    def authenticate(self, key: str | None) -> str | None:
        """The key's hash when the key is accepted, else ``None``."""
        if not key:
            return None
        accepted = self.config.api_keys
        return key_hash(key) if accepted is None or key in accepted else None

    def note_request(self, endpoint: str, now: float) -> None:
        """Count a request to ``endpoint`` (also the busiest wall-clock second)."""
        with self._lock:
            self.requests[endpoint] += 1
            second = int(now)
            if second != self._second:
                self._second, self._second_count = second, 0
            self._second_count += 1
            self.rps_max = max(self.rps_max, self._second_count)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def record(
        self,
        method: str,
        path: str,
        status: int | None,
        key: str | None,
        body: Any,
        retry_after: str | None = None,
        arrived: float | None = None,
    ) -> None:
        """Log a finished request (``status`` None = dropped connection; ``retry_after`` as sent;
        ``t`` when it was answered, ``arrived`` when it came in)."""
        now = time.time()
        entry = {"method": method, "path": path, "status": status, "t": now, "key_hash": key, "body": body}
        entry["arrived"] = now if arrived is None else arrived
        if retry_after is not None:
            entry["retry_after"] = retry_after
        with self._lock:
            self.in_flight -= 1
            self.log.append(entry)
            if key is not None:
                self._account(key).counters["requests"] += 1

    def status_gate(self, workers: int) -> asyncio.Semaphore:
        """The status workers (used on the server's loop only): one semaphore per worker count."""
        if self._status_gate is None or self._status_gate[0] != workers:
            self._status_gate = (workers, asyncio.Semaphore(workers))
        return self._status_gate[1]

    def connection_change(self, delta: int) -> None:
        """Track open TCP connections (+1 on open, -1 on close)."""
        with self._lock:
            self.open_connections += delta
            self.max_connections = max(self.max_connections, self.open_connections)

    def acquire_quota(self, key: str, category: str, now: float) -> tuple[float, float, int]:
        """Take one request from the key's ``submit``/``query`` bucket.

        :returns: ``(wait seconds or 0, per-minute limit, remaining)``.
        """
        with self._lock:
            account = self._account(key)
            quota = account.quotas.get(category)
            if quota is None:
                cfg = self.config
                limits = [getattr(cfg, f"{category}_{name}") for name in ("per_sec", "per_min", "burst_10s")]
                quota = account.quotas[category] = Quota(*limits)
            wait = quota.acquire(now)
            if wait:
                self.counters["rate_limited"] += 1
            return wait, quota.per_min, quota.remaining(now)

    # -- tasks ---------------------------------------------------------------------------

    def _account(self, key: str) -> Account:
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = Account(credits=self.config.initial_credits)
        return account

    def _settle(self, now: float) -> None:
        """Refund every task that has reached its ``failed`` state."""
        still_pending = []
        for task in self._pending_refunds:
            if now >= task.created + task.queued_s:
                account = self._account(task.key_hash)
                account.credits += task.cost
                account.used -= task.cost
                account.counters["refunded"] += 1
                self.counters["refunded"] += 1
                self.counters["credits_refunded"] += task.cost
                task.refunded = True
            else:
                still_pending.append(task)
        self._pending_refunds = still_pending

    def create_task(self, key: str, request: CreateRequest, now: float) -> tuple[str, Task | None]:
        """Create (or replay) a task.

        :returns: ``("created" | "replay", task)``, ``("insufficient", None)`` or ``("policy_422", None)``.
        """
        with self._lock:
            self._settle(now)
            account = self._account(key)
            existing = account.business.get(request.business_id) if request.business_id else None
            if existing is not None:
                account.counters["replays"] += 1
                self.counters["replays"] += 1
                return "replay", existing
            markers = parse_markers(request.prompt)
            if "content_policy_422" in markers:
                return "policy_422", None
            cost = task_cost(request.mode, request.duration, request.audio)
            if account.credits < cost:
                return "insufficient", None
            task = self._new_task(key, account, request, markers, cost, now)
            account.credits -= cost
            account.used += cost
            for counters in (account.counters, self.counters):
                counters["tasks_created"] += 1
                counters["charged"] += 1
                counters["credits_charged"] += cost
            return "created", task

    def _new_task(
        self,
        key: str,
        account: Account,
        request: CreateRequest,
        markers: dict[str, float | None],
        cost: int,
        now: float,
    ) -> Task:
        cfg = self.config
        queued, total, ttl = cfg.queued_seconds / cfg.speed, cfg.total_seconds / cfg.speed, cfg.ttl_seconds / cfg.speed
        if markers.get("total") is not None:
            total = float(markers["total"] or 0)
            queued = min(1.0, total / 5)
        if markers.get("expire") is not None:
            ttl = float(markers["expire"] or 0)
        account.prompt_counts[request.prompt] += 1
        fail_first = markers.get("fail_first")
        failing_now = fail_first is not None and account.prompt_counts[request.prompt] <= fail_first
        hidden = max(cfg.not_found_grace_seconds, 3.0 if "late_visibility" in markers else 0.0)
        task = Task(
            id=new_task_id(),
            key_hash=key,
            prompt=request.prompt,
            mode=request.mode,
            duration=request.duration,
            audio=request.audio,
            cost=cost,
            created=now,
            queued_s=queued,
            total_s=total,
            ttl_s=ttl,
            business_id=request.business_id,
            outcome=outcome_for(markers, failing_now),
            legacy="legacy" in markers,
            visible_from=now + hidden,
        )
        account.tasks[task.id] = task
        if task.business_id:
            account.business[task.business_id] = task
        self.tasks[task.id] = task
        if task.outcome in FAILURES:
            self._pending_refunds.append(task)
        return task

    def find_task(self, key: str, ref: str, now: float) -> Task | None:
        """The key's task whose id or ``client_business_id`` is ``ref`` (None while not yet visible)."""
        with self._lock:
            self._settle(now)
            account = self._account(key)
            task = account.tasks.get(ref) or account.business.get(ref)
            return task if task is not None and now >= task.visible_from else None

    def video_task(self, task_id: str, now: float) -> Task | None:
        """The task whose video is downloadable at ``now``, else ``None``."""
        with self._lock:
            task = self.tasks.get(task_id)
            return task if task is not None and task.video_available(now) else None

    # -- balance, uploads, stats ---------------------------------------------------------

    def balance(self, key: str, now: float) -> dict[str, Any]:
        """The API doc §8 balance JSON of the key."""
        with self._lock:
            self._settle(now)
            account = self._account(key)
            return {
                "success": True,
                "remain_balance": round(account.credits / CREDITS_PER_USD, 4),
                "used_balance": round(account.used / CREDITS_PER_USD, 4),
                "remain_credits": account.credits,
                "used_credits": account.used,
                "credits_per_usd": CREDITS_PER_USD,
                "unlimited_quota": False,
            }

    def add_upload(self, name: str, data: bytes, mime: str) -> None:
        with self._lock:
            self.uploads[name] = (data, mime)

    def get_upload(self, name: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self.uploads.get(name)

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counters for tests and benchmarks (the ``GET /_sim/stats`` body)."""
        now = time.time() if now is None else now
        with self._lock:
            self._settle(now)
            requests = {endpoint: self.requests[endpoint] for endpoint in ENDPOINTS}
            requests["total"] = sum(requests.values())
            names = ("tasks_created", "charged", "refunded", "replays", "credits_charged", "credits_refunded")
            by_key = {
                key: {
                    **{name: account.counters[name] for name in (*names, "requests")},
                    "remain_credits": account.credits,
                }
                for key, account in self.accounts.items()
            }
            tasks = [
                {
                    "id": task.id,
                    "client_business_id": task.business_id,
                    "prompt": task.prompt,
                    "status": task.phase(now)[0],
                    "created_at": int(task.created),
                    "key_hash": task.key_hash,
                }
                for task in self.tasks.values()
            ]
            return {
                "requests": requests,
                **{name: self.counters[name] for name in names},
                "rate_limited": self.counters["rate_limited"],
                "faults_fired": dict(self.faults_fired),
                "by_key": by_key,
                "tasks": tasks,
                "open_connections": self.open_connections,
                "max_concurrent_connections": self.max_connections,
                "in_flight_requests": self.in_flight,
                "max_in_flight_requests": self.max_in_flight,
                "requests_per_second_max": self.rps_max,
                "uptime_seconds": round(now - self.started, 3),
            }

    def recent_requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` request records, oldest first."""
        with self._lock:
            entries = list(self.log)
        return entries[-limit:] if limit else entries
