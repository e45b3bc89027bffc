"""Fixtures: settings of a test hub, and the auth + api apps running in-process against them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings, running_hub


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace)


@pytest.fixture
async def hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    async with running_hub(settings) as h:
        yield h
