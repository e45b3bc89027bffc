"""Lint and types, run with the tests: `ruff check` over the tree and `mypy --strict` (pyproject's [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.timeout(600)
def test_ruff() -> None:
    done = _run("ruff", "check", "--no-cache", "fleethub", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_mypy_strict() -> None:
    done = _run("mypy")  # files, --strict and the pydantic plugin come from pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr
