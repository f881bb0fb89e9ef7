"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_kling import __version__


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
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {"host": "https://toapis.com (or https://toapis.cn)", "password": "sk-..."},
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "max_requests_per_minute": {
                        "label": "Max requests per minute (this key, per process)",
                        "schema": {"type": ["number", "null"], "default": 3000},
                    },
                    "business_id_prefix": {
                        "label": "client_business_id prefix (deployments sharing one account)",
                        "schema": {"type": ["string", "null"], "maxLength": 16},
                    },
                    "proxy": {
                        "label": "Proxy URL (overrides HTTPS_PROXY/HTTP_PROXY/NO_PROXY)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "Verify TLS: true, false or a CA bundle path (overrides REQUESTS_CA_BUNDLE)",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            }
        ],
        "extra-links": ["airflow_provider_kling.links.KlingVideoLink"],
    }
