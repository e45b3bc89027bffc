"""The tests' own loosening of directory modes (tests/support/unix_users.py) leaves every mode as it found it."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

from tests.support.unix_users import GRANTS, _grants, grant_traverse, python_paths, traversable


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_nested_grants_restore_every_mode(tmp_path: Path) -> None:
    top = tmp_path / "closed"
    inner = top / "a" / "b"
    inner.mkdir(parents=True)
    top.chmod(0o700)
    (top / "a").chmod(0o700)
    with traversable(inner, inner / "x"):  # two paths under one ancestor: one hold of it, one release
        with grant_traverse([inner], readable=[inner]):
            assert _mode(top) & stat.S_IXOTH and _mode(inner) & stat.S_IROTH
        assert _mode(top) & stat.S_IXOTH, "the outer grant still holds it"
    assert (_mode(top), _mode(top / "a")) == (0o700, 0o700)
    assert str(top) not in (json.loads(GRANTS.read_text()) if GRANTS.exists() else {})
    with traversable(*python_paths()):
        pass


def test_a_holder_that_died_does_not_keep_a_mode_loosened(tmp_path: Path) -> None:
    top = tmp_path / "closed"
    top.mkdir()
    top.chmod(0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with _grants() as registry:  # a session killed while holding it
        registry[str(top)] = {"mode": 0o700, "holders": [dead.pid]}
        top.chmod(0o701)
    with _grants() as registry:
        assert str(top) not in registry
    assert _mode(top) == 0o700
