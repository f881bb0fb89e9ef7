"""The floor under CPU per poll: a bare aiohttp GET vs the provider's poll, same rate and batching.

``python -m benchmarks.poll_cost``. In a fresh process with Airflow imported, status requests go out
at 100 a second (what 1,000 triggers at 10 s ask for) in batches of 10 per loop iteration (what the
wake-up grid of a 10 s interval makes of them), on the loop's shared session, alternately as a bare
``session.get`` + ``json.loads``, as a raw ``asyncio.Protocol`` GET on kept-alive sockets (the
floor under any HTTP client on this machine: the system calls and the loop's wake-ups) and as the
provider's poll (:func:`airflow_provider_kling.wait.apoll`:
budget, attempt bounds, parsing, the wait decision). The bare figure is what any aiohttp client pays
here for the request itself; the difference is the provider's own work per poll.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.common import KEY, Figure, child_env, create, run_child, simulator

RATE = 100.0
BATCH = 10
REQUESTS = 2000
ROUNDS = 2


def measure() -> list[Figure]:
    with simulator("--queued-seconds", "2") as base:
        ids = [create(base, "cost [sim:total=600]", f"kl_cost_{i}") for i in range(100)]
        r = run_child(
            "benchmarks.poll_cost", {"base": base, "ids": ids}, child_env(base, max_requests_per_minute=600_000)
        )
    overhead = max(0.0, r["apoll"] - r["bare"])
    return [
        Figure(
            "raw asyncio GET on kept-alive sockets + json.loads, same rate and batches: CPU per request",
            r["raw"],
            "ms",
            "(reported)",
            None,
        ),
        Figure(
            f"bare aiohttp GET + json.loads, {RATE:.0f}/s in batches of {BATCH}: CPU per request",
            r["bare"],
            "ms",
            "(reported)",
            None,
        ),
        Figure("provider poll (apoll), same rate and batches: CPU per poll", r["apoll"], "ms", "(reported)", None),
        Figure("provider's own work per poll (difference, 0 = within noise)", overhead, "ms", "(reported)", None),
    ]


async def _child(spec: dict[str, Any]) -> dict[str, float]:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.wait import WaitState, apoll

    base, ids = spec["base"], spec["ids"]
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
    best: dict[str, float] = {}
    async with KlingHook() as hook:
        session = hook._session
        assert session is not None
        states = [WaitState(task_id, None, time.time() + 600) for task_id in ids]

        async def bare(i: int) -> None:
            async with session.get(f"{base}/v1/videos/generations/{ids[i % len(ids)]}", headers=headers) as r:
                json.loads(await r.read())

        async def provider(i: int) -> None:
            await apoll(hook, states[i % len(states)])

        loop = asyncio.get_running_loop()
        host, port = base.split("//", 1)[1].rsplit(":", 1)
        sockets: asyncio.Queue[_RawGet] = asyncio.Queue()
        for _ in range(BATCH):
            sockets.put_nowait((await loop.create_connection(_RawGet, host, int(port)))[1])

        async def raw(i: int) -> None:
            conn = await sockets.get()
            try:
                json.loads(await conn.get(f"/v1/videos/generations/{ids[i % len(ids)]}", host, port))
            finally:
                sockets.put_nowait(conn)

        for _ in range(ROUNDS):
            for name, fn in (("raw", raw), ("bare", bare), ("apoll", provider)):
                cpu0, t0 = time.process_time(), time.perf_counter()
                tasks = []
                for i in range(REQUESTS):
                    delay = t0 + (i // BATCH) * BATCH / RATE - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(fn(i)))
                await asyncio.gather(*tasks)
                ms = (time.process_time() - cpu0) * 1000 / REQUESTS
                best[name] = min(best.get(name, ms), ms)  # the quieter of the rounds
    return best


class _RawGet(asyncio.Protocol):
    """HTTP/1.1 GET on one kept-alive socket, no library: the floor under a client's request."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    async def get(self, path: str, host: str, port: str) -> bytes:
        self.waiter = asyncio.get_running_loop().create_future()
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        self.transport.write(request.encode())  # type: ignore[attr-defined]
        return await self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next(
            (
                int(v)
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                if k.lower() == b"content-length"
            ),
            0,
        )
        if len(rest) >= length and self.waiter is not None:
            self.buffer, waiter, self.waiter = b"", self.waiter, None
            waiter.set_result(rest[:length])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        with open(argv[1]) as f:
            spec = json.load(f)
        import airflow  # noqa: F401 - the triggerer's baseline

        print(json.dumps(asyncio.run(_child(spec))))
        return
    for figure in measure():
        print(figure.line())


if __name__ == "__main__":
    main(sys.argv[1:])
