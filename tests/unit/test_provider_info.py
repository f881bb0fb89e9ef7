"""The provider as Airflow sees it: entry point, schema, hooks, connection form, extras."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import airflow
import jsonschema
import pytest

from airflow_provider_kling.api import ClientSettings
from airflow_provider_kling.compat import AIRFLOW_V_3_2_PLUS
from airflow_provider_kling.get_provider_info import get_provider_info


def test_entry_point_and_schema():
    (entry,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_kling")
    ]
    info = entry.load()()
    assert info == get_provider_info()
    assert info["package-name"] == "airflow-provider-kling"
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)


def test_providers_manager_registers_everything():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert pm.providers["airflow-provider-kling"].version == "0.1.0"
    assert pm.hooks["kling"].hook_class_name == "airflow_provider_kling.hooks.kling.KlingHook"
    assert pm.hooks["kling"].connection_id_attribute_name == "kling_conn_id"
    assert "airflow_provider_kling.links.KlingVideoLink" in pm.extra_links_class_names


@pytest.mark.xfail(
    not AIRFLOW_V_3_2_PLUS,
    strict=True,
    reason="Airflow < 3.2 builds the form from the hook with flask_appbuilder only (issue 12 item 2)",
)
def test_providers_manager_reads_the_connection_form():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    behaviour = pm.field_behaviours["kling"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert {"schema", "port", "login"} <= set(behaviour["hidden_fields"])
    assert "extra__kling__timeout" in pm.connection_form_widgets


def test_form_extras_plain_prefixed_or_empty():
    conn = SimpleNamespace(host="", port=None, schema=None, password="sk-x")
    assert ClientSettings.from_connection(conn, {"extra__kling__timeout": 5}, "c").read_timeout == 5
    assert ClientSettings.from_connection(conn, {"timeout": 7}, "c").read_timeout == 7
    empty = ClientSettings.from_connection(conn, {"timeout": None, "max_requests_per_minute": ""}, "c")
    assert (empty.read_timeout, empty.requests_per_minute, empty.base_url) == (30.0, 3000.0, "https://toapis.com")
