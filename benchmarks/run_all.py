"""``make bench``: every benchmark in one run, each figure next to its target, and docs/performance.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks import overhead, poll_cost, quota, trigger_scale, worker_slot
from benchmarks.common import Figure

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores ({cpu}), {int(mem) / 1024 / 1024:.0f} GiB RAM, Python {platform.python_version()}"


def main() -> int:
    started = time.time()
    sections: list[tuple[str, list[Figure]]] = []

    def section(title: str, figures: list[Figure]) -> None:
        print(f"\n== {title}")
        for figure in figures:
            print(figure.line())
        sections.append((title, figures))

    section("Worker-slot seconds per generation (real Airflow, 30 s generation)", worker_slot.measure())
    for n in (1000, 5000):
        ours = trigger_scale.measure(n)
        section(f"Triggerer scale, N={n} started at once (poll interval 10 s)", trigger_scale.figures(ours))
        peer = trigger_scale.measure(n, "peer")
        section(
            f"Side by side, N={n}: our trigger vs a new aiohttp session per poll (the http provider's pattern)",
            trigger_scale.peer_figures(ours, peer),
        )
    section("Where a poll's CPU goes: bare aiohttp vs the provider's poll", poll_cost.measure())
    section(
        "10,000 waits in one process (poll interval 10 s)",
        trigger_scale.large_figures(trigger_scale.measure(10_000)),
    )
    section("Default quota (3,000/min) against a quota-enforcing server", quota.measure_default_quota())
    section("DAG-parse cost, submit overhead, polling efficiency", overhead.measure())

    judged = [f for _, figures in sections for f in figures if f.met is not None]
    met = sum(f.met for f in judged)
    lines = [
        "# Performance",
        "",
        f"Measured by `make bench` on {datetime.date.today().isoformat()}: {machine()}. Every figure below",
        "comes from that one run (the simulator runs in its own process; its CPU is not counted).",
        f"Wall time of the run: {time.time() - started:.0f} s. Result: **{met}/{len(judged)} targets met**.",
        "",
    ]
    for title, figures in sections:
        lines += [f"## {title}", "", "| figure | value | target | |", "|---|---|---|---|"]
        for f in figures:
            value = f"{f.value:.3g}" if isinstance(f.value, float) else str(f.value)
            verdict = {True: "met", False: "**missed**", None: ""}[f.met]
            lines.append(f"| {f.name} | {value} {f.unit} | {f.target} | {verdict} |")
        lines.append("")
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text()]
    DOC.write_text("\n".join(lines))
    print(f"\nwrote {DOC}")
    print(f"bench: {met}/{len(judged)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
