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

bench: env
	$(RUN) python -m benchmarks.run_all

clean:
	rm -rf .venv output .bench
