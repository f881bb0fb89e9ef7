"""Running the simulator: in a daemon thread with its own event loop, or inside a running loop."""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

from aiohttp import web

from .app import make_app
from .config import SimulatorConfig
from .faults import FaultSpec
from .state import SimState


def _track_connections(server: web.Server, state: SimState) -> None:
    """Count open TCP connections through the hooks aiohttp's low-level server calls."""
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: Any) -> None:
        made(handler, transport)
        state.connection_change(+1)

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        state.connection_change(-1)

    setattr(server, "connection_made", connection_made)  # noqa: B010
    setattr(server, "connection_lost", connection_lost)  # noqa: B010


class SimulatorServer:
    """A local ToAPIs-compatible server.

    Use :meth:`start` / :meth:`stop` (or ``with SimulatorServer(cfg) as sim:``) to run it in a
    daemon thread, or ``await`` :meth:`start_async` / :meth:`stop_async` inside a running loop.

    :param config: timings, credits, keys, rules; defaults to :class:`SimulatorConfig` ().
    :param host: interface to bind (loopback by default).
    :param port: TCP port; 0 picks a free one (see :attr:`port` once started).
    :param ssl_context: serve HTTPS with this server context (its certificate and key).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.state = SimState(config)
        self.host = host
        self._port = port
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http(s)://<host>:<port>``, the value for the connection's ``host``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://[{host}]:{self._port}" if ":" in host else f"{scheme}://{host}:{self._port}"

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    # -- running -----------------------------------------------------------------------

    async def start_async(self) -> SimulatorServer:
        """Start listening on the running event loop."""
        runner = web.AppRunner(make_app(self.state), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        assert runner.server is not None
        _track_connections(runner.server, self.state)
        await web.TCPSite(runner, self.host, self._port, ssl_context=self.ssl_context).start()
        self._port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop_async(self) -> None:
        """Stop listening and close connections (in-flight requests get 1 s)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start(self) -> SimulatorServer:
        """Run the server in a daemon thread; returns once it is listening.

        :raises OSError: when the port cannot be bound.
        """
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop_async())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=f"kling-simulator-{id(self):x}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop the server thread started by :meth:`start` (no-op when not running)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control (thread-safe, same as the /_sim routes) ---------------------------------

    def reset(self) -> None:
        """Clear tasks, uploads, faults, counters, credits and the request log (``POST /_sim/reset``)."""
        self.state.reset()

    def add_fault(self, fault: str | dict[str, Any] | FaultSpec | None = None, **spec: Any) -> list[dict[str, Any]]:
        """Queue a fault (``POST /_sim/faults``) and return the queue.

        ``add_fault(fault="rate_limit", endpoint="create", count=2, retry_after=1)``, a spec dict,
        a :class:`~.faults.FaultSpec` or a CLI string such as ``"server_error:status:2"``.
        """
        if isinstance(fault, str) and (spec or ":" not in fault):
            return self.state.add_faults({"fault": fault, **spec})
        if fault is None:
            return self.state.add_faults(spec)
        return self.state.add_faults(fault)

    def faults(self) -> list[dict[str, Any]]:
        """The queued faults (``GET /_sim/faults``)."""
        return self.state.list_faults()

    def stats(self) -> dict[str, Any]:
        """Counters (``GET /_sim/stats``)."""
        return self.state.stats()

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` request records (``GET /_sim/requests``)."""
        return self.state.recent_requests(limit)

    def set_config(self, **changes: Any) -> dict[str, Any]:
        """Change timings, rules etc. at run time (``POST /_sim/config``); returns the new config."""
        return self.state.set_config(**changes)


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS server context serving ``certfile`` (PEM chain) with ``keyfile`` (PEM key)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def run_in_thread(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """Start a :class:`SimulatorServer` in a daemon thread and return it (call ``stop()`` when done)."""
    return SimulatorServer(config, host=host, port=port).start()
