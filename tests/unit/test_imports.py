"""Every module of the provider imports on the installed Airflow (both ends of the supported range)."""

from __future__ import annotations

import importlib
import pkgutil

import airflow_provider_kling

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(airflow_provider_kling.__path__, prefix="airflow_provider_kling.")
)


def test_every_module_imports():
    assert len(MODULES) >= 15, MODULES
    failed = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every broken module at once
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert failed == {}
