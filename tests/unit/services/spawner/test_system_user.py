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


@pytest.mark.parametrize("account", ["daemon", "nobody"])
def test_system_accounts_never_run_a_users_server(account: str) -> None:
    import pwd

    from fleethub.services.spawner.backends.system_user import _checked

    pw = pwd.getpwnam(account)  # uid 1 and 65534 on Debian: outside the default [1000, 60000)
    with pytest.raises(AccountRefused, match=rf"account '{account}': it has uid {pw.pw_uid}, outside "
                                             r"spawner.system_user.uid_range \[1000, 60000\)"):
        _checked(pw, account, SystemUserSettings().uid_range)
    if os.path.isdir(pw.pw_dir):  # (nobody's home does not exist: refused for that too)
        assert _checked(pw, account, (0, 70000)).uid == pw.pw_uid  # a site whose users have low uids says so
