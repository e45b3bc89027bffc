"""The Grafana dashboard (deploy/grafana/fleethub.json) queries only metrics that some service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fleethub.shared.metrics import GROUPS, exported_names

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "fleethub.json"
# a metric name in PromQL: ours and JupyterHub's are prefixed; label names and functions are not
NAME = re.compile(r"\b(?:jupyterhub|fleethub)_[a-zA-Z0-9_]+\b")


def _exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_queried_metric_is_exported() -> None:
    exported = set().union(*(exported_names(service) for service in GROUPS))
    queried = {name for expr in _exprs() for name in NAME.findall(expr)}
    assert queried, "the dashboard queries nothing"
    assert sorted(queried - exported) == []


def test_the_dashboard_covers_what_operators_watch() -> None:
    queried = {name for expr in _exprs() for name in NAME.findall(expr)}
    for wanted in ("jupyterhub_server_spawn_duration_seconds_count", "jupyterhub_server_spawn_duration_seconds_bucket",
                   "jupyterhub_running_servers", "jupyterhub_request_duration_seconds_bucket",
                   "fleethub_command_queue_depth", "fleethub_dead_letters", "fleethub_outbox_lag_seconds",
                   "fleethub_route_propagation_seconds_bucket", "fleethub_proxy_requests_total",
                   "fleethub_proxy_bytes_total"):
        assert wanted in queried, wanted


def test_a_name_no_service_exports_is_caught() -> None:
    # the check above would pass vacuously if exported_names returned everything
    exported = set().union(*(exported_names(service) for service in GROUPS))
    assert "jupyterhub_server_spawn_duration_seconds" not in exported  # a histogram exports _bucket/_sum/_count
    assert "fleethub_proxy_requests_total" in exported
    assert "jupyterhub_total_users" in exported_names("api")
    assert "jupyterhub_total_users" not in exported_names("spawner")
