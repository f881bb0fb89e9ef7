"""Command line: ``kling-simulator`` / ``python -m airflow_provider_kling.simulator``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import PRESETS, SimulatorConfig
from .faults import FaultSpec
from .server import SimulatorServer, server_ssl_context


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kling-simulator``."""
    parser = argparse.ArgumentParser(prog="kling-simulator", description="Local ToAPIs-compatible Kling v3 simulator.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    add("--port", type=int, default=8765, help="TCP port; 0 picks a free one (default: 8765)")
    add("--port-file", type=Path, help="write the bound port to this file once listening")
    add("--preset", choices=sorted(PRESETS), default="test", help="timings: test = 1 s/5 s, realistic = 10 s/90 s")
    add("--queued-seconds", type=float, help="seconds a task stays queued")
    add("--total-seconds", type=float, help="seconds from creation to completed")
    add("--speed", type=float, help="divides all durations (default 1)")
    add("--ttl", type=float, dest="ttl_seconds", help="seconds a result video stays downloadable (default 86400)")
    add("--credits", type=int, dest="initial_credits", help="starting credits per key (default 100000)")
    add("--api-key", action="append", dest="api_keys", help="accepted key (repeatable); default: any non-empty key")
    add("--durations", help="accepted durations: 5,10,15 (default) or 3-15")
    add("--enforce-quota", action="store_true", default=None, help="apply the documented per-key async quota")
    add("--not-found-grace", type=float, dest="not_found_grace_seconds", help="seconds a new task answers 404")
    add("--language", choices=("en", "zh"), help="language of error messages (default en)")
    add("--fault", action="append", dest="faults", help="start-up fault, e.g. rate_limit:create:3 (repeatable)")
    add("--status-latency", type=float, dest="status_latency_seconds", help="seconds every status answer takes")
    add("--status-workers", type=int, dest="status_workers", help="status answers served at once (0 = no limit)")
    add("--proxy-only", action="store_true", default=None, help="answer only requests that come through a proxy")
    add("--certfile", type=Path, help="serve HTTPS with this PEM certificate chain")
    add("--keyfile", type=Path, help="the PEM private key of --certfile")
    return parser


_CONFIG_ARGS = (
    "queued_seconds",
    "total_seconds",
    "speed",
    "ttl_seconds",
    "initial_credits",
    "api_keys",
    "durations",
    "enforce_quota",
    "not_found_grace_seconds",
    "language",
    "faults",
    "status_latency_seconds",
    "status_workers",
    "proxy_only",
)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the config: the preset, then every option that was given.

    :raises ValueError: on inconsistent values or a bad fault spec.
    """
    overrides = {name: getattr(args, name) for name in _CONFIG_ARGS if getattr(args, name) is not None}
    for spec in overrides.get("faults", ()):
        FaultSpec.parse(spec)
    if "queued_seconds" not in overrides and "total_seconds" in overrides:
        overrides["queued_seconds"] = min(PRESETS[args.preset]["queued_seconds"], overrides["total_seconds"])
    return SimulatorConfig.preset(args.preset, **overrides)


async def serve(server: SimulatorServer, port_file: Path | None = None) -> None:
    """Run ``server`` on this loop until SIGTERM or SIGINT."""
    await server.start_async()
    if port_file is not None:
        temporary = port_file.with_name(port_file.name + ".tmp")
        temporary.write_text(f"{server.port}\n")
        os.replace(temporary, port_file)
    print(f"kling-simulator listening on {server.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except NotImplementedError:  # pragma: no cover - Windows
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        await stop.wait()
    finally:
        await server.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kling-simulator``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, KeyError) as exc:
        parser.error(str(exc))
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    try:
        context = server_ssl_context(str(args.certfile), args.keyfile and str(args.keyfile)) if args.certfile else None
    except (OSError, ValueError) as exc:
        parser.error(f"--certfile/--keyfile: {exc}")
    server = SimulatorServer(config, host=args.host, port=args.port, ssl_context=context)
    try:
        asyncio.run(serve(server, args.port_file))
    except OSError as exc:
        print(f"kling-simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
