"""How the benchmarks print a figure: thousands separated, about three significant digits."""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    """A figure for a results table ("–" when missing)."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"
