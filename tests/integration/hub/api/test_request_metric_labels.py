"""The api's `jupyterhub_request_duration_seconds` labels stay bounded and meaningful under `base_url`
(in-process auth + api apps served as `fleethub run api` serves them, real NATS and PostgreSQL): the handler
is the matched route's template even though `BasePrefix` hands the app a copy of the request's scope, and a
client's invented methods do not become label values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

HUB = "/jhub/hub"
COUNT = "jupyterhub_request_duration_seconds_count"


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, base_url="/jhub")


@pytest.fixture
async def hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    async with running_hub(settings) as h:
        yield h


def _request_counts(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == COUNT:
                labels = sample.labels
                out[(labels["method"], labels["handler"], labels["code"])] = sample.value
    return out


async def test_handler_is_the_route_template_under_base_url(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    for _ in range(2):  # not one user's read: the fast read answers that in front of the router
        r = await hub.client.get(f"{HUB}/api/groups", headers=headers)
        assert r.status_code == 200, r.text
    r = await hub.client.get(f"{HUB}/api/nothing-here", headers=headers)
    assert r.status_code == 404
    r = await hub.client.get(f"{HUB}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    counts = _request_counts(r.text)
    assert counts.get(("GET", "/hub/api/groups", "200")) == 2, counts
    assert counts.get(("GET", "unmatched", "404")) == 1, counts
    assert not any(h.startswith("/jhub") for _, h, _ in counts), counts  # templates, never the public path


async def test_invented_methods_share_one_label(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    for method in ("BREW", "PROPFIND", "X-ANY-1", "X-ANY-2"):
        r = await hub.client.request(method, f"{HUB}/api/users", headers=headers)
        assert r.status_code in (400, 405), (method, r.status_code, r.text)
        r = await hub.client.request(method, f"{HUB}/nowhere-{method}", headers=headers)
        assert r.status_code in (400, 404, 405), (method, r.status_code, r.text)
    r = await hub.client.get(f"{HUB}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    counts = _request_counts(r.text)
    methods = {m for m, _, _ in counts}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods
    assert sum(v for (m, h, _), v in counts.items() if m == "other" and h == "/hub/api/users") == 4, counts
