"""A local ToAPIs-compatible server for the Kling v3 video API (stdlib + aiohttp only).

It implements create/status/upload/balance with realistic progression, a real MP4 result,
``client_business_id`` replay, the three error envelopes, injectable faults and prompt markers.
Start it with ``kling-simulator`` / ``python -m airflow_provider_kling.simulator``, or::

    from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer

    with SimulatorServer(SimulatorConfig(queued_seconds=0.2, total_seconds=1)) as sim:
        print(sim.base_url)
"""

from __future__ import annotations

from .app import make_app
from .config import PRESETS, SimulatorConfig
from .faults import FAULTS, FaultSpec
from .server import SimulatorServer, run_in_thread
from .state import SimState

__all__ = [
    "FAULTS",
    "PRESETS",
    "FaultSpec",
    "SimState",
    "SimulatorConfig",
    "SimulatorServer",
    "make_app",
    "run_in_thread",
]
