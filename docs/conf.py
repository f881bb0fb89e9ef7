"""Sphinx configuration of the airflow-provider-kling docs (``make docs``).

Pages are Markdown (MyST); the API reference is generated from the reST docstrings. The build is
strict (``-W --keep-going -n``): a warning or an unresolved reference fails it. No network: no
intersphinx, so references to Airflow and library classes are listed below as known-external.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the provider, which imports Airflow: give it a throw-away home, no examples.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kling-docs-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_kling import __version__  # noqa: E402

project = "airflow-provider-kling"
author = "airflow-provider-kling contributors"
copyright = "the airflow-provider-kling contributors, Apache-2.0"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "separated"
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = False

# Strict references (-n): everything of this provider must resolve; these are outside it.
nitpick_ignore_regex = [
    (r"py:.*", r"(airflow|aiohttp|requests|tenacity|pendulum|datetime|collections|typing|os|pathlib|enum)\..*"),
    (r"py:.*", r"(Any|Context|TaskInstanceKey|BaseOperator|Path|PathLike|Mapping|Sequence|timedelta|datetime)"),
    (r"py:.*", r"(NoneType|ClientSession|TriggerEvent|AsyncIterator|Iterator|Callable|RetryCallState)"),
]

html_theme = "furo"
html_title = f"airflow-provider-kling {release}"
html_static_path = ["_static"]
html_show_sourcelink = False


def _resolve_short_python_names(app, env, node, contnode):
    """Resolve ``:class:`KlingTask``` and similar short names in docstrings to the one documented object
    whose dotted name ends with them (the docstrings use the names imported into their module)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    suffix = "." + target.split(".")[-1] if "." not in target else "." + target
    matches = [name for name in domain.objects if name.endswith(suffix) or name == target]
    if len(matches) != 1:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)


def setup(app):
    app.connect("missing-reference", _resolve_short_python_names)
