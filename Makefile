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

# Both ends of the supported range (see .ci/matrix.sh): Airflow 3.0.0 and every dependency floor on
# Python 3.10, the newest Airflow on Python 3.13, each in its own venv from a committed pinned file.
# The two ends run side by side, each suite on two pytest workers (the suite mostly waits on
# simulated generations: 4 workers on 2 cores took the matrix from 489 s to 312 s); MATRIX_JOBS=1 runs
# the ends in turn, MATRIX_PYTEST_ARGS="-p no:xdist" runs each suite sequentially.
MATRIX_JOBS ?= 2
export MATRIX_PYTEST_ARGS ?= -n 2 --dist loadfile
.PHONY: matrix matrix-low matrix-high matrix-lock
matrix:
	$(MAKE) --no-print-directory -j$(MATRIX_JOBS) --output-sync=target matrix-low matrix-high

matrix-low matrix-high: matrix-%:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	UV="$(UV)" .ci/matrix.sh $*

# Re-pin both ends: the floors of pyproject.toml on 3.10, the newest releases on 3.13.
matrix-lock: env
	$(RUN) python .ci/floors.py > .ci/floors.txt
	$(UV) pip compile --quiet pyproject.toml --group pyproject.toml:test --python-version 3.10 \
		-c .ci/floors.txt --custom-compile-command "make matrix-lock" -o .ci/requirements-low.txt
	$(UV) pip compile --quiet pyproject.toml --group pyproject.toml:test --python-version 3.13 \
		--custom-compile-command "make matrix-lock" -o .ci/requirements-high.txt
	rm .ci/floors.txt

# sdist + wheel into dist/, checked with twine.
.PHONY: dist
dist: env
	rm -rf dist
	$(UV) build --quiet --sdist --wheel --out-dir dist
	$(RUN) twine check --strict dist/*

clean:
	rm -rf .venv output .bench .matrix dist docs/_build
