"""The system-user backend's rules that need no account: names, `~`, its settings, the helper's refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleethub.services.spawner import asuser
from fleethub.services.spawner.backends.system_user import AccountRefused, _expand_home, unix_name
from fleethub.shared.backend_settings import SystemUserSettings
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings


def test_unix_names() -> None:
    config = SystemUserSettings(username_map={"Ann Example@corp": "ann", "odd": "not a name"})
    assert unix_name(config, "alice") == "alice"
    assert unix_name(config, "Ann Example@corp") == "ann"
    for bad in ("alice@example.org", "a b", "-rf", "../etc", "12345", "x" * 33, ""):
        with pytest.raises(AccountRefused, match="username_map"):
            unix_name(config, bad)
    with pytest.raises(AccountRefused, match="maps hub user 'odd' to 'not a name'"):
        unix_name(config, "odd")


def test_notebook_dir_tilde_is_the_accounts_home() -> None:
    assert _expand_home("~", "/home/ann") == "/home/ann"
    assert _expand_home("~/work/ann", "/home/ann") == "/home/ann/work/ann"
    assert _expand_home("/srv/~x", "/home/ann") == "/srv/~x"
    assert _expand_home("~bob", "/home/ann") == "~bob"


def test_a_mediator_must_name_the_user() -> None:
    with pytest.raises(ConfigError, match=r"spawner.system_user.mediator .*\{username\}"):
        load_settings(None, spawner={"system_user": {"mediator": ["sudo", "-n", "--"]}})
    ok = load_settings(None, spawner={"system_user": {"mediator": ["sudo", "-n", "-E", "-u", "{username}", "--"]}})
    assert ok.spawner.system_user.mediator[4] == "{username}"


def test_the_helper_never_execs_as_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert os.geteuid() == 0, "run as root (CI does): the refusal is of root"
    assert asuser.main(["exec", "--", "/bin/true"]) == 126
    assert "refusing to run a user server as root" in capsys.readouterr().err
    as_root = subprocess.run([sys.executable, "-I", "-m", "fleethub.services.spawner.asuser", "exec", "--as", "0:0:",
                              "--", "/bin/true"], capture_output=True, text=True, timeout=30)
    assert as_root.returncode == 126 and "refusing" in as_root.stderr, as_root
    assert asuser.main(["exec", "--as", "nonsense", "--", "/bin/true"]) == 126
    assert asuser.main(["bogus"]) == 2
