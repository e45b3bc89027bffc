"""The `stack` fixture: the fault suite's standard stack (tests/support/faultstack.py), up and stopped per test.

A test that needs another shape (the culler, one more replica, other settings) calls `fault_stack(...)`
itself with the `tmp_path`, `nats_url`, `database_url` and `nats_namespace` fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.faultstack import FaultStack, fault_stack


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[FaultStack]:
    """auth, 2 api, 2 spawner workers, 2 proxy nodes, up; everything stopped and reaped afterwards."""
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace) as s:
        yield s
