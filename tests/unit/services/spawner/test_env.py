"""The user server's environment: the JUPYTERHUB_* contract and the spawner settings that shape it."""

from __future__ import annotations

import json

from fleethub.services.spawner.env import server_env
from fleethub.shared.security import server_token
from fleethub.shared.settings import load_settings

KEY = "k" * 40


def test_spawner_settings_reach_the_environment_formatted() -> None:
    settings = load_settings(None, spawner={
        "notebook_dir": "/srv/{username}/work", "default_url": "/lab/tree/{servername}",
        "environment": {"WORKSPACE": "{username}-{servername}", "JUPYTERHUB_DEFAULT_URL": "/tree", "RAW": "{other}"},
    })
    env = server_env(settings, KEY, "alice", "gpu", "spawn1")
    assert env["JUPYTERHUB_ROOT_DIR"] == "/srv/alice/work"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/tree"  # `environment` is applied last and wins
    assert env["WORKSPACE"] == "alice-gpu" and env["RAW"] == "{other}"
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-alice-gpu"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/user/alice/gpu/oauth_callback"
    assert env["JUPYTERHUB_API_TOKEN"] == server_token(KEY, "spawn1")
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == ["access:servers!server=alice/gpu",
                                                                  "access:servers!user=alice"]


def test_unset_settings_leave_their_variables_out() -> None:
    env = server_env(load_settings(None), KEY, "bob", "", "spawn2")
    assert "JUPYTERHUB_ROOT_DIR" not in env and "JUPYTERHUB_DEFAULT_URL" not in env
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/bob/"
