"""The command line: migrate, the refusal to run on an unmigrated database, configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleethub.shared.db.migrate import head_revision
from fleethub.shared.net import free_port
from tests.support.cluster import env_without_fleethub

pytestmark = pytest.mark.integration


def fleethub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = env_without_fleethub()
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fleethub", *args], env=full, capture_output=True, text=True,
                          timeout=60)


def test_services_refuse_an_unmigrated_database_until_migrate(database_url: str, nats_url: str) -> None:
    env = {"FLEETHUB_DATABASE_URL": database_url, "FLEETHUB_NATS_URL": nats_url}
    out = fleethub("run", "api", env=env)
    assert out.returncode == 2
    assert "run `fleethub migrate`" in out.stderr and "Traceback" not in out.stderr
    out = fleethub("migrate", env=env)
    assert out.returncode == 0 and f"migrated to {head_revision()}" in out.stdout
    assert fleethub("migrate", env=env).returncode == 0  # idempotent


def test_migrate_names_a_database_it_cannot_reach() -> None:
    env = {"FLEETHUB_DATABASE_URL": f"postgresql://fleethub:s3cretpw@127.0.0.1:{free_port()}/fleethub"}
    out = fleethub("migrate", env=env)
    assert out.returncode == 2, out.stderr
    assert "cannot reach the database (FLEETHUB_DATABASE_URL)" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "s3cretpw" not in out.stderr


def test_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    out = fleethub("run", "api", env={"FLEETHUB_API__PORT": "eighty"})
    assert out.returncode == 2 and "api.port (FLEETHUB_API__PORT)" in out.stderr and "Traceback" not in out.stderr
    out = fleethub("run", "api")
    assert out.returncode == 2 and "FLEETHUB_DATABASE_URL" in out.stderr
    cfg = tmp_path / "fleethub.toml"
    cfg.write_text('[auth]\nauthenticator = "dummy"\n')
    out = fleethub("migrate", "--config", str(cfg))
    assert out.returncode == 2 and "auth.dummy_password" in out.stderr
    out = fleethub("token", "admin", "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "fleethub up" in out.stderr
    out = fleethub("run", "nonsense")
    assert out.returncode == 2 and "invalid choice" in out.stderr
