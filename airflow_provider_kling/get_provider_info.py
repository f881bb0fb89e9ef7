"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point.

The connection form is declared here once. Airflow 3.2 and later read ``ui-field-behaviour`` and
``conn-fields`` from this metadata without importing the hook. Airflow 3.0 and 3.1 ignore both keys
and ask the hook instead (``KlingHook.get_ui_field_behaviour`` / ``get_connection_form_widgets``),
which build the same form from :data:`UI_FIELD_BEHAVIOUR` and :data:`CONN_FIELDS`.
"""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_kling import __version__

#: Standard fields of the ``kling`` connection form: hidden, relabelled, with placeholders. The raw
#: "Extra Fields JSON" box stays visible on every version (the React UI always shows it).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": "https://toapis.com (or https://toapis.cn)", "password": "sk-..."},
}

#: Extra fields of the form (JSON Schema per field), stored as top-level keys of the connection extra.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Read timeout (seconds)",
        "description": "Read timeout of each request in seconds. Empty: 30.",
        "schema": {"type": ["number", "null"], "default": 30},
    },
    "rate_limit_group": {
        "label": "Rate-limit group (default, vip or svip)",
        "description": "The account's ToAPIs group: picks the documented quotas the budgets below "
        "default to (default 300 submits / 3000 queries a minute, vip 1000 / 10000, svip 2000 / 30000). "
        "Empty: default.",
        "schema": {"type": ["string", "null"], "default": "default"},
    },
    "max_submits_per_minute": {
        "label": "Max submits per minute (this key, per process)",
        "description": "Client-side budget for creating generations, shared by every task using this key "
        "in one process. Empty: the group's submit quota. Set quota / processes to split it.",
        "schema": {"type": ["number", "null"]},
    },
    "max_requests_per_minute": {
        "label": "Max queries per minute (this key, per process)",
        "description": "Client-side budget for status, balance and upload calls, shared by every task and "
        "trigger using this key in one process. Empty: the group's query quota (3000 for default). "
        "Set quota / processes to split it.",
        "schema": {"type": ["number", "null"]},
    },
    "business_id_prefix": {
        "label": "client_business_id prefix",
        "description": "Namespace for the idempotency ids when several Airflow deployments share one "
        "ToAPIs account: up to 16 characters of A-Z, a-z, 0-9, _ and -.",
        "schema": {"type": ["string", "null"], "maxLength": 16},
    },
    "proxy": {
        "label": "Proxy URL",
        "description": "HTTP(S) proxy for every call of this connection, e.g. http://proxy.internal:3128. "
        "Empty: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.",
        "schema": {"type": ["string", "null"]},
    },
    "verify": {
        "label": "Verify TLS (true, false or a CA bundle path)",
        "description": "true, false, or the path of a CA bundle file. Empty: REQUESTS_CA_BUNDLE / "
        "SSL_CERT_FILE from the environment, else the system CAs.",
        "schema": {"type": ["string", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Hooks, operators, sensors, triggers, the ``kling`` connection type and the extra link."""
    return {
        "package-name": "airflow-provider-kling",
        "name": "Kling (ToAPIs)",
        "description": "Generate videos with the Kling v3 model through the ToAPIs API: text-to-video, "
        "image-to-video and first/last-frame, with deferrable waiting and exactly-once submission.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Kling",
                "external-doc-url": "https://docs.toapis.com/docs/en/api-reference/videos/kling-v3/generation",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Kling", "python-modules": ["airflow_provider_kling.hooks.kling"]}],
        "operators": [{"integration-name": "Kling", "python-modules": ["airflow_provider_kling.operators.kling"]}],
        "sensors": [{"integration-name": "Kling", "python-modules": ["airflow_provider_kling.sensors.kling"]}],
        "triggers": [{"integration-name": "Kling", "python-modules": ["airflow_provider_kling.triggers.kling"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_kling.hooks.kling.KlingHook",
                "connection-type": "kling",
                "hook-name": "Kling (ToAPIs)",
                "ui-field-behaviour": copy.deepcopy(UI_FIELD_BEHAVIOUR),
                "conn-fields": copy.deepcopy(CONN_FIELDS),
            }
        ],
        "extra-links": ["airflow_provider_kling.links.KlingVideoLink"],
    }
