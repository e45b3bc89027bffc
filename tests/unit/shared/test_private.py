"""Private files and directories: 0600/0700 whatever the umask, and the walk that tightens a data dir."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleethub.shared.private import loose_entries, open_private, private_dir, tighten, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_private_writes_and_opens_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "runtime.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "secret")
    assert target.read_text() == "secret" and _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["runtime.json"]  # no temporary file left behind

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    (tmp_path / "planted").symlink_to(elsewhere)
    write_private(tmp_path / "planted", "secret")  # a symlink is replaced, never written through
    assert elsewhere.read_text() == "untouched" and not (tmp_path / "planted").is_symlink()

    log = tmp_path / "server.log"
    log.write_text("")
    log.chmod(0o644)
    os.close(open_private(log))
    assert _mode(log) == 0o600
    assert _mode(private_dir(tmp_path / "logs")) == 0o700


def test_tighten_takes_every_group_and_other_bit_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "pg" / "base").mkdir(parents=True)
    (root / "pg" / "base" / "1").write_text("x")
    (root / "runtime.json").write_text("{}")
    (root / "ok").write_text("")
    (root / "ok").chmod(0o600)
    (root / "pg").chmod(0o750)
    (root / "pg" / "base" / "1").chmod(0o640)
    (root / "link").symlink_to("/etc/hostname")
    loosened = {e.path.relative_to(tmp_path).as_posix(): e.mode for e in tighten(root)}
    assert loosened == {"data": 0o755, "data/pg": 0o750, "data/pg/base": 0o755, "data/pg/base/1": 0o640,
                        "data/runtime.json": 0o644}
    assert loose_entries(root) == [] and tighten(root) == []
    assert {_mode(p) for p in root.rglob("*") if not p.is_symlink()} | {_mode(root)} == {0o700, 0o600}
    assert _mode(Path("/etc/hostname")) & 0o044  # the symlink's target is not ours: left alone


def test_the_data_dir_may_let_one_group_pass(tmp_path: Path) -> None:
    root = private_dir(tmp_path / "data")
    root.chmod(0o710)
    assert tighten(root, traverse_gid=root.stat().st_gid) == [] and _mode(root) == 0o710
    assert [e.mode for e in tighten(root, traverse_gid=root.stat().st_gid + 1)] == [0o710]
    assert _mode(root) == 0o700
