"""The distribution as users get it: the wheel and sdist built from this tree, and the matrix pins."""

from __future__ import annotations

import email
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _uv() -> list[str]:
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    for candidate in ("uv", "python3"):
        found = shutil.which(candidate)
        if found and (
            candidate == "uv" or subprocess.run([found, "-m", "uv", "--version"], capture_output=True).returncode == 0
        ):
            return [found] if candidate == "uv" else [found, "-m", "uv"]
    pytest.skip("uv is not installed: it builds the distributions")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [*_uv(), "build", "--quiet", "--sdist", "--wheel", "--out-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_wheel_contents(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        license_text = zf.read(f"{dist_info}/licenses/LICENSE").decode()
    assert "airflow_provider_kling/py.typed" in names
    assert "airflow_provider_kling/compat.py" in names
    assert "airflow_provider_kling/simulator/assets/sample.mp4" in names
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert not [n for n in names if n.startswith(("tests/", "example_dags/", "benchmarks/", "docs/", ".ci/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert re.search(
        r"\[apache_airflow_provider\]\s*provider_info = airflow_provider_kling\.get_provider_info:get_provider_info",
        entry_points,
    )
    assert "kling-simulator = airflow_provider_kling.simulator.__main__:main" in entry_points


def test_wheel_metadata(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))))
    assert meta["Name"] == "airflow-provider-kling"
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier")
    pythons = sorted(
        c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert pythons == ["3.10", "3.11", "3.12", "3.13"], pythons
    assert {"Typing :: Typed", "Operating System :: OS Independent", "Framework :: Apache Airflow :: Provider"} <= set(
        classifiers
    )
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(u.startswith("https://") and "example" not in u for u in urls.values())
    requires = meta.get_all("Requires-Dist")
    assert "apache-airflow>=3.0.0" in requires
    assert any(
        r.startswith("apache-airflow-providers-amazon") and re.search(r"extra == ['\"]s3['\"]", r) for r in requires
    )
    assert not any(r.startswith(("pytest", "ruff", "mypy", "twine")) for r in requires)


def test_sdist_has_license_tests_and_examples(built):
    _, sdist = built
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"LICENSE", "pyproject.toml", "README.md", "tests/conftest.py", "airflow_provider_kling/py.typed"} <= names
    assert any(n.startswith("example_dags/example_kling_") for n in names)
    assert not [n for n in names if n.startswith((".venv/", ".matrix/", "dist/", "output/"))]


def test_low_end_of_the_matrix_pins_exactly_the_declared_floors():
    """`make matrix-low` proves the floors in pyproject.toml, not some later release."""
    sys.path.insert(0, str(REPO / ".ci"))
    try:
        from floors import floors
    finally:
        sys.path.remove(str(REPO / ".ci"))
    pinned = {}
    for line in (REPO / ".ci" / "requirements-low.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pinned[name.lower()] = version.strip()
    for floor in floors(REPO / "pyproject.toml"):
        name, version = floor.split("==")
        assert pinned.get(name.lower(), "").split(".") == _padded(version, pinned.get(name.lower(), "")), floor
    high = (REPO / ".ci" / "requirements-high.txt").read_text()
    assert re.search(r"^apache-airflow==3\.\d+\.\d+$", high, re.M)


def _padded(version: str, like: str) -> list[str]:
    parts = version.split(".")
    return parts + ["0"] * (len(like.split(".")) - len(parts))


def test_matrix_names_a_missing_interpreter(tmp_path):
    """A machine without pyenv's Python 3.10 gets a clear error, not a download or a venv on another Python."""
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "matrix.sh"), "low"],
        env={"PATH": "/usr/bin:/bin", "PYENV_ROOT": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"no Python 3.10 under {tmp_path}/versions" in done.stderr
    assert done.stdout == ""  # stopped before creating or installing anything
