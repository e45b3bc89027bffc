"""Settings: TOML + FLEETHUB_<SECTION>__<KEY> variables, validated, errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings, settings_env


def test_defaults() -> None:
    s = load_settings()
    assert s.proxy.port == 8000
    assert s.spawner.cmd == ["jupyterhub-singleuser"]
    assert s.auth.authenticator == "password"
    assert s.hub_api_url == "http://127.0.0.1:8000/hub/api"


def test_toml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fleethub.toml"
    cfg.write_text(
        '[proxy]\nport = 9000\n[spawner]\ncmd = ["python", "-m", "x"]\n[auth]\nadmin_users = ["root1"]\n'
        "[culler]\ntimeout = 30\n"
    )
    s = load_settings(cfg)
    assert (s.proxy.port, s.spawner.cmd, s.auth.admin_users, s.culler.timeout) == (9000, ["python", "-m", "x"], ["root1"], 30)
    monkeypatch.setenv("FLEETHUB_PROXY__PORT", "9100")
    monkeypatch.setenv("FLEETHUB_AUTH__ADMIN_USERS", '["a", "b"]')
    s = load_settings(cfg)
    # env wins over the file, and the file's other keys of the same section survive (deep merge)
    assert s.proxy.port == 9100 and s.auth.admin_users == ["a", "b"] and s.spawner.cmd == ["python", "-m", "x"]
    assert load_settings(cfg, proxy={"port": 9200}).proxy.port == 9200


def test_errors_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETHUB_PROXY__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"proxy\.port \(FLEETHUB_PROXY__PORT\)"):
        load_settings()
    monkeypatch.delenv("FLEETHUB_PROXY__PORT")
    with pytest.raises(ConfigError, match="auth.dummy_password"):
        load_settings(auth={"authenticator": "dummy"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[proxy]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"proxy\.prot"):
        load_settings(unknown)
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings(secret_key="short")


def test_database_url_forms() -> None:
    with pytest.raises(ConfigError, match="FLEETHUB_DATABASE_URL"):
        load_settings().require_database_url()
    assert load_settings(database_url="postgresql://u:p@h/d").require_database_url() == "postgresql+asyncpg://u:p@h/d"
    with pytest.raises(ConfigError):
        load_settings(database_url="mysql://x").require_database_url()


def test_fields_set_tells_configured_from_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "nats_url" not in load_settings().model_fields_set
    monkeypatch.setenv("FLEETHUB_NATS_URL", "nats://127.0.0.1:1")
    assert "nats_url" in load_settings().model_fields_set


def test_settings_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(
        database_url="postgresql://u:s3cr3tpw@h/d",
        auth={"authenticator": "dummy", "dummy_password": "longenough"},
        spawner={"cmd": ["a", "b c"], "environment": {"X": "1"}},
    )
    env = settings_env(s)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again.model_dump(mode="json") == s.model_dump(mode="json")
    assert again.auth.dummy_password is not None and again.auth.dummy_password.get_secret_value() == "longenough"
    assert "s3cr3tpw" not in repr(again) and "longenough" not in repr(again)


def test_proxy_trusted_networks_and_workers_are_checked() -> None:
    settings = load_settings(None, proxy={"trusted_proxies": ["10.0.0.0/8", "::1", "192.168.1.7"], "workers": 4})
    assert settings.proxy.workers == 4 and len(settings.proxy.trusted_proxies) == 3
    with pytest.raises(ConfigError, match=r"trusted_proxies.*'10.0.0.0/33' is not an address or network"):
        load_settings(None, proxy={"trusted_proxies": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match="workers"):
        load_settings(None, proxy={"workers": 0})


def test_services_are_validated_and_survive_the_trip_to_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(None, services=[{"name": "whoami", "url": "http://127.0.0.1:9000/", "api_token": "x" * 32}])
    svc = settings.services[0]
    assert (svc.url, svc.prefix, svc.client_id, svc.redirect_uri) == (
        "http://127.0.0.1:9000", "/services/whoami/", "service-whoami", "/services/whoami/oauth_callback")
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    again = load_settings(None)
    assert again.services[0].api_token is not None and again.services[0].api_token.get_secret_value() == "x" * 32
    bad = [
        ([{"name": "a", "url": "https://x:1"}], "http://"),
        ([{"name": "a", "oauth_client_id": "other"}], "service-"),
        ([{"name": "a/b"}], "name"),
        ([{"name": "a", "unknown": 1}], "unknown"),
        ([{"name": "a"}, {"name": "a"}], "same name"),
    ]
    for services, words in bad:
        with pytest.raises(ConfigError, match=words):
            load_settings(None, services=services)


def test_roles_and_custom_scopes_are_checked(tmp_path: Path) -> None:
    conf = tmp_path / "hub.toml"
    conf.write_text(
        '[[services]]\nname = "culler"\napi_token = "0123456789abcdef0123"\n\n'
        '[custom_scopes."custom:data:read"]\ndescription = "read the data service"\n\n'
        '[[roles]]\nname = "analysts"\nscopes = ["custom:data:read", "read:users!group=lab"]\n'
        'users = ["ann"]\ngroups = ["lab"]\nservices = ["culler"]\n'
    )
    settings = load_settings(conf)
    assert settings.roles[0].scopes == ["custom:data:read", "read:users!group=lab"]
    assert settings.custom_scopes["custom:data:read"].description == "read the data service"
    assert settings.custom_subscopes == {}
    nested = load_settings(custom_scopes={"custom:a:write": {"description": "w", "subscopes": ["custom:a:read"]},
                                          "custom:a:read": {"description": "r"}})
    assert nested.custom_subscopes == {"custom:a:write": ("custom:a:read",)}
    bad: dict[str, object]
    for bad, match in (
        ({"roles": [{"name": "admin", "scopes": []}]}, "default role"),
        ({"roles": [{"name": "twice"}, {"name": "twice"}]}, "same name"),
        ({"roles": [{"name": "orphan", "services": ["nope"]}]}, "not configured"),
        ({"roles": [{"name": "needs", "scopes": ["custom:undeclared"]}]}, "undeclared custom scopes"),
        ({"custom_scopes": {"custom:Bad": {"description": "x"}}}, "custom:<lowercase name>"),
        ({"custom_scopes": {"custom:ok": {}}}, "description"),
        ({"custom_scopes": {"custom:a:write": {"description": "w", "subscopes": ["custom:a:read"]}}},
         "undeclared custom scopes"),
        ({"roles": [{"name": "Bad Name"}]}, "roles"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_settings(**bad)
