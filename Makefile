# Two commands do all the set-up: `make demo` and `make test`.
SHELL := /bin/bash
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := copy
PYTHON ?= python3
# uv from PATH, else the one pip installs for this Python (`python -m uv`).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif
RUN := $(UV) run --frozen

.PHONY: demo test lint typecheck unit e2e bench env clean

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

env: .venv/.synced

demo: env
	$(RUN) python example_dags/demo.py

lint: env
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: env
	$(RUN) mypy

# In-process tests on both cores (a test module stays on one worker), then the real-Airflow
# end-to-end tests alone, so the Airflow processes they start have the machine to themselves.
unit: env
	$(RUN) pytest -m "not e2e" -n 2 --dist loadfile

e2e: env
	$(RUN) pytest -m e2e -p no:xdist

test: lint typecheck unit e2e

# The docs site (Sphinx + MyST), strict: warnings are errors, every reference must resolve.
.PHONY: docs
docs: env
	$(RUN) --group docs sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# Debian's Chromium for the browser test; nothing to do when it is already installed.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium could not be installed: the browser test will be skipped"

# The connection form in the real Airflow UI, in headless Chromium (also refreshes docs/_static/*.png).
.PHONY: browser
browser: env chromium
	$(RUN) --group browser pytest tests/browser -m browser -p no:xdist

bench: env
	$(RUN) python -m benchmarks.run_all

clean:
	rm -rf .venv output .bench docs/_build
