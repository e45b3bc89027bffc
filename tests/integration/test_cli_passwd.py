"""`fleethub passwd`: a password from stdin or generated, `--admin`, the rules, and errors that name the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from fleethub.shared.accounts import check_password
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import User
from tests.support.cluster import env_without_fleethub, migrated

pytestmark = pytest.mark.integration


def passwd(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = env_without_fleethub()
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fleethub", "passwd", *args], env=full, input=stdin,
                          capture_output=True, text=True, timeout=60)


async def _opens(database_url: str, name: str, password: str) -> tuple[bool, bool]:
    """(the password opens `name`'s approved account, `name` is an admin)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            found = await check_password(session, [name], password)
            admin = (await session.execute(select(User.admin).where(User.name == name))).scalar()
        return found is not None and found.approved, bool(admin)
    finally:
        await engine.dispose()


async def test_passwd_sets_passwords_against_the_database(database_url: str) -> None:
    await migrated(database_url)
    env = {"FLEETHUB_DATABASE_URL": database_url}
    out = passwd("Carol", "--stdin", "--admin", stdin="carol-first-pw\n", env=env)
    assert out.returncode == 0, out.stderr
    assert "password of carol (an admin) set" in out.stdout and "carol-first-pw" not in out.stdout + out.stderr
    assert await _opens(database_url, "carol", "carol-first-pw") == (True, True)
    # stdin that is no terminal is read without --stdin; the admin flag stays without --admin
    out = passwd("carol", stdin="carol-second-pw\r\n", env=env)
    assert out.returncode == 0, out.stderr
    assert await _opens(database_url, "carol", "carol-second-pw") == (True, True)
    assert await _opens(database_url, "carol", "carol-first-pw") == (False, True)
    out = passwd("dave", "--generate", env=env)
    assert out.returncode == 0, out.stderr
    generated = out.stdout.splitlines()[-1]
    assert len(generated) >= 20 and await _opens(database_url, "dave", generated) == (True, False)


async def test_passwd_errors_name_the_problem(database_url: str, tmp_path: Path) -> None:
    await migrated(database_url)
    env = {"FLEETHUB_DATABASE_URL": database_url}
    for stdin, message in (("short\n", "at least 8 characters"), ("password1\n", "too common"),
                           ("ErinMarie\n", "must not be the user name"), ("", "no password on standard input"),
                           ("\n", "no password on standard input")):
        out = passwd("erinmarie", "--stdin", stdin=stdin, env=env)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, (stdin, out.stderr)
    out = passwd("a/b", "--stdin", stdin="good-password-1\n", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.startswith("fleethub: error:")
    rules = tmp_path / "fleethub.toml"
    rules.write_text("[auth.password]\nminimum_password_length = 20\n")
    out = passwd("erinmarie", "--stdin", "--config", str(rules), stdin="only-sixteen-chr\n", env=env)
    assert out.returncode == 2 and "at least 20 characters" in out.stderr
    out = passwd("erinmarie", "--stdin", "--generate", env=env)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    out = passwd("erinmarie", "--stdin", "--data-dir", str(tmp_path / "none"), stdin="good-password-1\n")
    assert out.returncode == 2 and "fleethub up" in out.stderr and "FLEETHUB_DATABASE_URL" in out.stderr
    assert await _opens(database_url, "erinmarie", "good-password-1") == (False, False)
