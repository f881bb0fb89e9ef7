"""The ``kling`` connection form in the real Airflow UI, driven in headless Chromium.

An ``airflow api-server`` (temporary AIRFLOW_HOME, SQLite, free loopback port, simple auth manager) and
the simulator run locally. The test logs in with the generated admin password, opens *Add Connection*
for type ``kling``, checks the standard fields (relabelled, with placeholders) and every extra field,
saves a connection to the simulator, presses *Test Connection* and expects the balance message, then
reopens the edit form to check that the extras were stored. The form's screenshot is the one shown in
``docs/connection.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_provider_kling.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_kling.simulator import SimulatorConfig, SimulatorServer
from tests.browser.conftest import BROWSER
from tests.conftest import REPO, TEST_API_KEY

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SCREENSHOTS = REPO / "docs" / "_static"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CREDITS = 12345
#: How long the UI may take for one step (first page load compiles nothing, but the machine is shared).
STEP_MS = 30_000


@pytest.fixture(scope="module")
def playwright_api():
    if not Path(BROWSER).exists():
        pytest.skip("Debian's chromium is not installed (make browser installs it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the 'browser' dependency group is not installed")
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def simulator_for_ui():
    server = SimulatorServer(SimulatorConfig(api_keys={TEST_API_KEY}, initial_credits=CREDITS), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """``airflow api-server`` alone (no scheduler needed for the form), with *Test Connection* enabled."""
    from tests.e2e.airflow_stack import AirflowStack

    stack = AirflowStack(
        tmp_path_factory.mktemp("dags"),
        env={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"},
        home=tmp_path_factory.mktemp("airflow-home"),
    )
    try:
        stack._write_password_file()
        stack.migrate()
        stack.start_component("api-server", timeout=120)
        yield stack
    finally:
        stack.stop()


def _admin_password(home: Path) -> str:
    """The password the simple auth manager generated for ``admin`` (its generated password file)."""
    return json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]


def _screenshot(page, element, name: str) -> None:
    """Save ``element`` for the docs, without focus rings or animations, so reruns give the same image."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    element.screenshot(path=str(SCREENSHOTS / name), animations="disabled")


def _portless_test_body(route) -> None:
    """Send ``port: null`` instead of ``0`` for a connection without a port.

    Airflow's UI (3.3.2) posts ``Number(null) == 0`` as the port of a portless connection, and the API
    then refuses to reuse the stored key ("The host or port to test differs from the stored connection",
    400) for every connection type without a port. Fixed upstream in the API by normalising ``0`` like a
    blank port (apache/airflow#73298); this applies the same normalisation, and is a no-op once the fix
    ships. Everything else about the request is the UI's own.
    """
    body = json.loads(route.request.post_data or "{}")
    if body.get("port") == 0:
        body["port"] = None
    route.continue_(post_data=json.dumps(body))


def test_connection_form_fields_test_button_and_saved_extras(playwright_api, simulator_for_ui, api_server):
    browser = playwright_api.chromium.launch(executable_path=BROWSER, args=CHROMIUM_FLAGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.set_default_timeout(STEP_MS)
        base = api_server.base_url

        # Log in (simple auth manager).
        page.goto(f"{base}/")
        page.locator("input[name=username]").fill("admin")
        page.locator("input[name=password]").fill(_admin_password(api_server.home))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)

        # Add Connection, type kling.
        page.goto(f"{base}/connections")
        page.get_by_role("button", name="Add Connection").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Connection ID").fill("kling_ui")
        dialog.get_by_label("Connection Type").fill("Kling")
        page.get_by_text("Kling (ToAPIs)", exact=True).click()

        def field(label: str):
            # Labels of text extras are not tied to their inputs (for= differs from id): go by the field's box.
            box = dialog.locator("[data-scope=field][data-part=root]").filter(has=page.locator("label", has_text=label))
            return box.locator("input, textarea").first

        # Standard fields: relabelled, with placeholders; schema, port and login hidden.
        behaviour = UI_FIELD_BEHAVIOUR
        base_url, api_key = field(behaviour["relabeling"]["host"]), field(behaviour["relabeling"]["password"])
        assert base_url.get_attribute("placeholder") == behaviour["placeholders"]["host"]
        assert api_key.get_attribute("placeholder") == behaviour["placeholders"]["password"]
        assert api_key.get_attribute("type") == "password"
        for hidden in ("schema", "port", "login"):
            assert dialog.locator(f"[name={hidden}]").count() == 0, f"{hidden} should be hidden"
        _screenshot(page, dialog, "connection-form.png")
        base_url.fill(simulator_for_ui.base_url)
        api_key.fill(TEST_API_KEY)

        # Extra fields: every extra, labelled, with its description and default.
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        labels = [text.strip() for text in dialog.locator("label").all_inner_texts()]
        for name, spec in CONN_FIELDS.items():
            assert spec["label"] in labels, f"extra {name} ({spec['label']!r}) missing from the form: {labels}"
            assert dialog.get_by_text(spec["description"]).count() == 1
        assert field("Read timeout (seconds)").input_value() == "30"
        assert field("Rate-limit group").input_value() == "default"
        assert field("Max queries per minute").input_value() == ""  # empty: the group's quota
        _screenshot(page, dialog, "connection-form-extras.png")

        # Fill the extras in and save.
        field("Read timeout (seconds)").fill("20")
        field("client_business_id prefix").fill("ui-test")
        field("Verify TLS").fill("true")
        field("Rate-limit group").fill("vip")
        dialog.get_by_role("button", name="Save").click()
        page.get_by_text("Connection has been successfully created").wait_for()

        # Test Connection: the api-server runs KlingHook.test_connection against the simulator.
        row = page.get_by_role("row").filter(has_text="kling_ui")
        page.route("**/api/v2/connections/test", _portless_test_body)
        with page.expect_response("**/api/v2/connections/test") as response_info:
            row.get_by_role("button", name="Test Connection").click()
        assert response_info.value.json()["status"] is True, response_info.value.text()
        toast = page.locator("[data-scope=toast][data-part=root]").filter(has_text="Connection OK:")
        toast.wait_for()
        assert "Test Connection Successful" in toast.inner_text()
        assert f"Connection OK: {CREDITS} credits remaining" in toast.inner_text()
        _screenshot(page, toast, "connection-test.png")
        assert TEST_API_KEY not in page.content()

        # Edit form: the extras were stored and are read back into their fields.
        row.get_by_role("button", name="Edit Connection").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        assert field("Read timeout (seconds)").input_value() == "20"
        assert field("client_business_id prefix").input_value() == "ui-test"
        assert field("Verify TLS").input_value() == "true"
        assert field("Proxy URL").input_value() == ""
        assert field("Rate-limit group").input_value() == "vip"
    finally:
        browser.close()
    for name in ("connection-form.png", "connection-form-extras.png", "connection-test.png"):
        assert os.path.getsize(SCREENSHOTS / name) > 2_000
