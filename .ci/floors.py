"""Print the floor of every runtime dependency in pyproject.toml as an exact pin (``name==floor``).

`make matrix-lock` compiles these as constraints for the lowest end of the supported range, so the
low job installs exactly the versions pyproject.toml promises to work with.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement


def floors(pyproject: Path) -> list[str]:
    pins = []
    for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        req = Requirement(line)
        lowest = [s.version for s in req.specifier if s.operator == ">="]
        if len(lowest) != 1:
            sys.exit(f"{line!r}: every runtime dependency needs exactly one '>=' floor")
        pins.append(f"{req.name}=={lowest[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(Path(__file__).resolve().parent.parent / "pyproject.toml")))
