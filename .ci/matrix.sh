#!/usr/bin/env bash
# One end of the supported range: `.ci/matrix.sh low|high`.
#   low  = the lowest supported Airflow and every runtime floor (.ci/requirements-low.txt) on the newest Python 3.10
#   high = the newest Airflow on PyPI (.ci/requirements-high.txt) on the newest Python 3.13
# Both run the in-process suite (`-m "not e2e"`; MATRIX_PYTEST_ARGS, default sequential, e.g. `-n 2
# --dist loadfile` as `make matrix` sets it); MATRIX_E2E=1 adds the real-process tests to high.
# Each end gets its own venv under .matrix/, made from pyenv's interpreter (no Python download) and
# installed exactly from the committed pinned file, plus this project editable without dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
end=${1:?usage: .ci/matrix.sh low|high}
case $end in
    low) series=3.10 ;;
    high) series=3.13 ;;
    *) echo "unknown end '$end' (low or high)" >&2; exit 2 ;;
esac
uv=${UV:-python3 -m uv}
export UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy

root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
python=$(ls -d "$root"/versions/"$series".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $python || ! -x $python ]]; then
    echo "matrix $end: no Python $series under $root/versions (install it with 'pyenv install $series')" >&2
    exit 1
fi

venv=.matrix/$end
started=$SECONDS
version=$(basename "$(dirname "$(dirname "$python")")")
if ! grep -qx "version_info = $version" "$venv/pyvenv.cfg" 2>/dev/null; then
    rm -rf "$venv"
    $uv venv --quiet --python "$python" "$venv"
fi
$uv pip sync --quiet --python "$venv/bin/python" ".ci/requirements-$end.txt"
$uv pip install --quiet --python "$venv/bin/python" --no-deps -e .
installed=$((SECONDS - started))
"$venv/bin/python" - <<'PY'
import sys
from importlib.metadata import version
print(f"matrix: Python {sys.version.split()[0]}, apache-airflow {version('apache-airflow')}, "
      f"common-compat {version('apache-airflow-providers-common-compat')}, aiohttp {version('aiohttp')}")
PY

# The in-process suite: every module imported, every example DAG parsed (DagBag) and run through dag.test().
"$venv/bin/python" -m pytest -m "not e2e" -q ${MATRIX_PYTEST_ARGS:--p no:xdist}
if [[ $end == high && ${MATRIX_E2E:-0} == 1 ]]; then
    # Opt-in: the real-Airflow processes on Python 3.13. `make test` already runs them on the same
    # Airflow release (Python of .venv), and they bind fixed ports, so CI does not start them twice.
    "$venv/bin/python" -m pytest -m e2e -p no:xdist -q
fi
echo "matrix $end: install ${installed} s, total $((SECONDS - started)) s"
