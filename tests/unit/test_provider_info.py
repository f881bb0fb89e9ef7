"""The provider as Airflow sees it: entry point, schema, hooks, connection form, extras."""

from __future__ import annotations

import json
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import airflow
import jsonschema
import pytest
from packaging.version import Version

import airflow_provider_kling.get_provider_info as provider_info_module
from airflow_provider_kling.api import ClientSettings
from airflow_provider_kling.get_provider_info import CONN_FIELDS, get_provider_info

AIRFLOW_VERSION = Version(airflow.__version__).release[:2]
#: The extras every version's form must offer (DESIGN.md "Connection", "Networks as they are").
FORM_EXTRAS = {
    "timeout",
    "rate_limit_group",
    "max_submits_per_minute",
    "max_requests_per_minute",
    "business_id_prefix",
    "proxy",
    "verify",
}


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


def _hook_meta(monkeypatch, declarative: bool) -> dict:
    """What ``GET /ui/connections/hook_meta`` sends the React form for ``kling``, built by this Airflow.

    ``declarative=False`` strips ``conn-fields`` and ``ui-field-behaviour`` from the provider metadata,
    which is what Airflow 3.0 and 3.1 see (they do not read those keys), so the form has to come from
    the hook's ``get_ui_field_behaviour`` / ``get_connection_form_widgets``.
    """
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager

    if not declarative:
        info = get_provider_info()
        for key in ("conn-fields", "ui-field-behaviour"):
            del info["connection-types"][0][key]
        monkeypatch.setattr(provider_info_module, "get_provider_info", lambda: info)
    # The UI's stand-ins for WTForms are registered as modules when FAB is absent: drop them afterwards.
    modules_before = set(sys.modules)
    HookMetaService.hook_meta_data.cache_clear()
    ProvidersManager()._cleanup()  # forget hooks registered without the UI's WTForms stand-ins
    try:
        if declarative:
            meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}["kling"].model_dump()
        else:
            hooks, widgets, behaviours = HookMetaService._get_hooks_with_mocked_fab()
            assert hooks["kling"] is not None
            meta = {
                "standard_fields": HookMetaService._make_standard_fields(behaviours.get("kling")).model_dump(),
                "extra_fields": HookMetaService._convert_extra_fields(
                    {k: w for k, w in widgets.items() if k.startswith("extra__kling__")}
                ).get("kling"),
            }
    finally:
        HookMetaService.hook_meta_data.cache_clear()
        ProvidersManager()._cleanup()
        for name in set(sys.modules) - modules_before:
            if name.split(".")[0] in ("wtforms", "flask_babel", "flask_appbuilder"):
                del sys.modules[name]
    return json.loads(json.dumps(meta, default=str))


def _assert_kling_form(meta: dict) -> None:
    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "Base URL"
    assert standard["host"]["placeholder"].startswith("https://toapis.com")
    assert standard["password"]["title"] == "API key"
    assert all(standard[name]["hidden"] for name in ("url_schema", "port", "login"))
    extras = meta["extra_fields"] or {}
    assert set(extras) == FORM_EXTRAS
    for name, field in extras.items():
        assert field["schema"]["title"] == CONN_FIELDS[name]["label"]
        assert field["description"] == CONN_FIELDS[name]["description"]
        assert "null" in field["schema"]["type"], f"{name} must be optional"


@pytest.mark.skipif(AIRFLOW_VERSION < (3, 2), reason="conn-fields are read from Airflow 3.2 on")
def test_declarative_form_without_hook_methods(monkeypatch):
    """Airflow >= 3.2 builds the whole form from the metadata and never calls the legacy hook methods."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = _hook_meta(monkeypatch, declarative=True)
    _assert_kling_form(meta)
    assert meta["extra_fields"]["timeout"]["value"] == 30
    assert not [w for w in caught if "KlingHook" in str(w.message)], "hook form methods were called"


def test_form_from_hook_methods_where_conn_fields_are_not_read(monkeypatch):
    """The Airflow 3.0/3.1 path: no declarative keys, the form comes from the hook with the same fields."""
    if AIRFLOW_VERSION < (3, 1):
        pytest.importorskip("wtforms", reason="Airflow 3.0 builds hook forms only with wtforms (FAB) installed")
    meta = _hook_meta(monkeypatch, declarative=False)
    _assert_kling_form(meta)
    assert meta["extra_fields"]["timeout"]["value"] == "30"
    assert meta["extra_fields"]["verify"]["value"] is None


def test_values_saved_by_either_form_are_read():
    """The legacy form stores text, the declarative one numbers; the hook reads both (and blanks)."""
    conn = SimpleNamespace(host="", port=None, schema=None, password="sk-x")
    legacy = ClientSettings.from_connection(conn, {"timeout": "12.5", "max_requests_per_minute": "60"}, "c")
    declarative = ClientSettings.from_connection(conn, {"timeout": 12.5, "max_requests_per_minute": 60}, "c")
    assert (
        (legacy.read_timeout, legacy.requests_per_minute)
        == (12.5, 60.0)
        == (
            declarative.read_timeout,
            declarative.requests_per_minute,
        )
    )


def test_form_extras_plain_prefixed_or_empty():
    conn = SimpleNamespace(host="", port=None, schema=None, password="sk-x")
    assert ClientSettings.from_connection(conn, {"extra__kling__timeout": 5}, "c").read_timeout == 5
    assert ClientSettings.from_connection(conn, {"timeout": 7}, "c").read_timeout == 7
    empty = ClientSettings.from_connection(conn, {"timeout": None, "max_requests_per_minute": ""}, "c")
    assert (empty.read_timeout, empty.requests_per_minute, empty.base_url) == (30.0, 3000.0, "https://toapis.com")
