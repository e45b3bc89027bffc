"""The home page's words for a server's state, and how long ago its last activity was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleethub.services.api.models import INACTIVE, Pending, ReportedStatus
from fleethub.services.api.server_rows import RowState, ago, row_state

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("status", "state"), [
    (INACTIVE, RowState.STOPPED),
    (ReportedStatus(True, True, None), RowState.RUNNING),
    (ReportedStatus(True, True, Pending.STOP), RowState.STOPPING),  # still answers, a stop under way
    (ReportedStatus(True, False, Pending.STOP), RowState.STOPPING),
    (ReportedStatus(True, False, Pending.SPAWN), RowState.STARTING),
])
def test_row_state(status: ReportedStatus, state: RowState) -> None:
    assert row_state(status) is state


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=59), "just now"),
    (timedelta(minutes=1), "1 minute ago"),
    (timedelta(minutes=59, seconds=59), "59 minutes ago"),
    (timedelta(hours=2), "2 hours ago"),
    (timedelta(days=3, hours=5), "3 days ago"),
    (timedelta(seconds=-30), "just now"),  # a clock a little ahead
])
def test_ago(delta: timedelta, text: str) -> None:
    assert ago(NOW - delta, NOW) == text


def test_never() -> None:
    assert ago(None, NOW) == "never"
