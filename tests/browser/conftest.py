"""Browser tests: the real Airflow UI in headless Chromium (``make browser`` runs them).

They need Debian's ``chromium`` (``make browser`` installs it with apt-get when it is missing) and the
``playwright`` Python package (the ``browser`` dependency group); Playwright drives the system browser,
it never downloads one. They run only when selected with ``-m browser``: an api-server and a browser
are too heavy for every ``make unit`` run.
"""

from __future__ import annotations

import shutil

import pytest

#: Debian's Chromium (the ``chromium`` package); Playwright launches it instead of downloading a browser.
BROWSER = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the Airflow UI in headless Chromium (make browser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = "browser" in (config.option.markexpr or "") and "not browser" not in config.option.markexpr
    for item in items:
        if item.get_closest_marker("browser") and not selected:
            item.add_marker(pytest.mark.skip(reason="browser test: run it with `make browser` (-m browser)"))
