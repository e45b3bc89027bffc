"""The user server's environment: the JUPYTERHUB_* contract and the spawner settings that shape it."""

from __future__ import annotations

import json

import pytest

from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.managed import service_env
from fleethub.shared.errors import ConfigError
from fleethub.shared.security import server_token
from fleethub.shared.settings import HubService, load_settings

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


def test_only_the_allow_list_of_the_worker_environment_is_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_SECRET_ACCESS_KEY": "canary", "DATABASE_URL": "canary", "FLEETHUB_X": "canary",
                        "LANG": "C.UTF-8", "KEEP_ME": "yes"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None, spawner={"env_keep": ["PATH", "LANG", "KEEP_ME", "UNSET_ONE"],
                                            "environment": {"EXTRA": "{username}"}})
    env = server_env(settings, KEY, "carol", "", "spawn3")
    assert "canary" not in env.values() and "UNSET_ONE" not in env
    assert env["LANG"] == "C.UTF-8" and env["KEEP_ME"] == "yes" and env["EXTRA"] == "carol"
    svc = HubService(name="svc", command=["true"], environment={"OWN": "1"})
    env = service_env(settings, KEY, svc)
    assert "canary" not in env.values() and env["KEEP_ME"] == "yes" and env["OWN"] == "1"
    assert env["JUPYTERHUB_SERVICE_NAME"] == "svc"


@pytest.mark.parametrize("name", ["FLEETHUB_SETTINGS_JSON", "fleethub_database_url", "JUPYTERHUB_CRYPT_KEY"])
def test_the_allow_list_refuses_the_hubs_secrets(name: str) -> None:
    with pytest.raises(ConfigError, match=r"spawner\.env_keep"):
        load_settings(None, spawner={"env_keep": ["PATH", name]})


def test_the_default_allow_list_is_jupyterhubs() -> None:
    assert load_settings(None).spawner.env_keep == [
        "CONDA_DEFAULT_ENV", "CONDA_ROOT", "JUPYTERHUB_SINGLEUSER_APP", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "PATH",
        "PYTHONPATH", "VIRTUAL_ENV"]


def test_a_base_url_shapes_the_servers_and_services_urls() -> None:
    settings = load_settings(None, base_url="/jhub/", public_url="https://hub.example",
                             services=[{"name": "dash", "url": "http://127.0.0.1:9000", "command": ["dash"]}])
    env = server_env(settings, KEY, "alice", "gpu", "spawn1")
    assert env["JUPYTERHUB_BASE_URL"] == "/jhub/"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/jhub/user/alice/gpu/"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/jhub/user/alice/gpu/oauth_callback"
    assert env["JUPYTERHUB_API_URL"] == "https://hub.example/jhub/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == "https://hub.example/jhub/hub/api/users/alice/activity"
    svc = service_env(settings, KEY, settings.services[0])
    assert svc["JUPYTERHUB_BASE_URL"] == "/jhub/" and svc["JUPYTERHUB_SERVICE_PREFIX"] == "/jhub/services/dash/"
    assert svc["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/jhub/services/dash/oauth_callback"
    assert svc["JUPYTERHUB_PUBLIC_HUB_URL"] == "https://hub.example/jhub/hub/"
    assert svc["JUPYTERHUB_PUBLIC_URL"] == "https://hub.example/jhub/services/dash/"
