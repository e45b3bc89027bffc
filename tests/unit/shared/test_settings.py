"""Settings: TOML + FLEETHUB_<SECTION>__<KEY> variables, validated, errors naming the setting; the
hand-over of a parent's settings to its child processes (`child_env`)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr

from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.managed import service_env
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import SETTINGS_VAR, ServiceSettings, child_env, load_settings


def through_child(settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """What a child process started with `child_env(settings)` loads (`fleethub run` calls
    `load_settings` with neither a file nor overrides)."""
    env = child_env(settings)
    assert [k for k in env if k.startswith("FLEETHUB_")] == [SETTINGS_VAR]
    for key in [k for k in os.environ if k.startswith("FLEETHUB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(SETTINGS_VAR, env[SETTINGS_VAR])
    return load_settings()


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
    assert (s.proxy.port, s.spawner.cmd, s.auth.admin_users, s.culler.timeout) == (
        9000, ["python", "-m", "x"], ["root1"], 30)
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
    with pytest.raises(ConfigError, match=r"auth\.dummy_password"):
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


def test_a_child_gets_the_parents_settings_secrets_included(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(
        database_url="postgresql://u:s3cr3tpw@h/d",
        auth={"authenticator": "dummy", "dummy_password": "longenough"},
        spawner={"cmd": ["a", "b c"], "environment": {"X": "1"}},
    )
    again = through_child(s, monkeypatch)
    assert again.model_dump(mode="json") == s.model_dump(mode="json")
    assert again.auth.dummy_password is not None and again.auth.dummy_password.get_secret_value() == "longenough"
    assert again.require_database_url() == "postgresql+asyncpg://u:s3cr3tpw@h/d"
    assert "s3cr3tpw" not in repr(again) and "longenough" not in repr(again)
    assert "s3cr3tpw" not in again.model_dump_json() and "longenough" not in again.model_dump_json()


def test_proxy_trusted_networks_and_workers_are_checked() -> None:
    settings = load_settings(None, proxy={"trusted_proxies": ["10.0.0.0/8", "::1", "192.168.1.7"], "workers": 4})
    assert settings.proxy.workers == 4 and len(settings.proxy.trusted_proxies) == 3
    with pytest.raises(ConfigError, match=r"trusted_proxies.*'10.0.0.0/33' is not an address or network"):
        load_settings(None, proxy={"trusted_proxies": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match="workers"):
        load_settings(None, proxy={"workers": 0})


def test_user_lists_are_normalized_and_checked() -> None:
    s = load_settings(None, auth={"admin_users": ["Admin", "admin", "\uff22oss"], "allowed_users": ["Be\u0301a"],
                                  "blocked_users": ["MALLORY"]})
    assert s.auth.admin_users == ["admin", "boss"] and s.auth.allowed_users == ["b\u00e9a"]
    assert s.auth.blocked_users == ["mallory"]
    for bad in ("..", "%2e%2e", "a\u200db", " root"):
        with pytest.raises(ConfigError, match=r"auth\.admin_users .*invalid username"):
            load_settings(None, auth={"admin_users": [bad]})


def test_services_are_validated_and_survive_the_trip_to_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        None, services=[{"name": "whoami", "url": "http://127.0.0.1:9000/", "api_token": "x" * 32}])
    svc = settings.services[0]
    assert (svc.url, svc.prefix, svc.client_id, svc.redirect_uri) == (
        "http://127.0.0.1:9000", "/services/whoami/", "service-whoami", "/services/whoami/oauth_callback")
    again = through_child(settings, monkeypatch)
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
    bad: dict[str, Any]
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


# --- every field through the parent → child path, generated by walking the model -------------------

# Values the validators need in a given shape, by dotted field path (list and dict entries share their
# field's path). Every other field gets a generic non-default value from its type.
WALK_CRYPT_KEY = "5ec7e7" + "0" * 58  # hex of 32 bytes
SHAPED: dict[str, Any] = {
    "auth.crypt_key": [SecretStr(WALK_CRYPT_KEY)],
    "nats_namespace": "walk",
    "proxy.trusted_proxies": ["10.1.0.0/16", "::1"],
    "public_url": "https://hub.walk.example",  # https: proxy.ssl_cert (set by the walk) requires it
    "base_url": "/walk/",
    "proxy.allowed_hosts": ["walk.example:8443"],
    "services.name": "walk-svc",
    "services.url": "http://127.0.0.1:9999",
    "services.oauth_client_id": "service-walk",
    "services.oauth_client_allowed_scopes": ["custom:walk:read", "read:users"],
    "services.oauth_roles": ["walk-role"],
    "roles.name": "walk-role",
    "roles.scopes": ["custom:walk:read", "read:users!group=lab"],
    "roles.services": ["walk-svc"],
    "custom_scopes.subscopes": ["custom:walk:read"],
    "spawner.mem_limit": "3G",
    "spawner.system_user.uid_range": (500, 65000),
    "spawner.mem_guarantee": "1.5G",
    "spawner.system_user.mediator": ["sudo", "-n", "-E", "-u", "{username}", "--"],
    "spawner.profiles.slug": "walk-profile",
    "auth.pam.encoding": "latin-1",
    "spawner.profiles.overrides": {"cpu_limit": 2.0, "docker": {"image": "walk/image"}},
    "auth.github.allowed_organizations": ["walk-org", "walk-org:walk-team"],  # 'org' or 'org:team' only
    "auth.github.allowed_groups": ["walk-org:walk-users"],
    "auth.github.admin_groups": ["walk-org:walk-admins"],
    "webhooks.name": "walk-hook",  # a subject token
    "webhooks.url": "https://walk.example/hook",  # http(s) only
    "webhooks.events": ["server.*"],  # known event types only
}
DICT_KEYS = {"custom_scopes": "custom:walk:read"}


def _bounded(path: str, default: float | None, step: float, metadata: list[Any]) -> float:
    value = (default if default is not None else 0) + step
    for bound in metadata:
        if getattr(bound, "le", None) is not None and value > bound.le:
            value = (default if default is not None else bound.le) - step
        if getattr(bound, "lt", None) is not None and value >= bound.lt:
            value = (default if default is not None else bound.lt) - step
    return value


def _value(path: str, annotation: Any, default: Any = None, metadata: list[Any] | None = None) -> Any:
    """A valid value other than `default` for the field at `path`, from its type.

    Raises:
        TypeError: a type the walk does not know, so a new kind of setting fails the test until it does.
    """
    if path in SHAPED:
        return SHAPED[path]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _value(path, args[0], default, metadata)
    if origin in (Union, UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return _value(path, inner, default, metadata)
    if origin is Literal:
        return next(a for a in args if a != default)
    if origin is list:
        return [_value(path, args[0])]
    if origin is dict:
        return {DICT_KEYS.get(path, "WALK_KEY"): _value(path, args[1])}
    if annotation is Any:  # free-form JSON (a service's `info`)
        return {"n": [1, 2.5, "three", True, None]}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {name: _value(f"{path}.{name}".lstrip("."), f.annotation,
                             f.get_default(call_default_factory=True), f.metadata)
                for name, f in annotation.model_fields.items()}
    if annotation is bool:
        return not default
    if annotation is int:
        return int(_bounded(path, default, 1, metadata or []))
    if annotation is float:
        return _bounded(path, default, 0.5, metadata or []) if default is not None else 1.5
    if annotation is str:
        return f"walk-{path}"
    if annotation is SecretStr:
        return SecretStr(f"secret-of-{path}-".ljust(40, "x"))
    if annotation is Path:
        return Path("/walk") / path
    raise TypeError(f"the settings walk cannot set {path or 'the root'} ({annotation!r}): teach it the type")


def _defaults_left(model: BaseModel, path: str = "") -> list[str]:
    """Dotted paths of the fields of `model` (and of the models inside it) still at their default."""
    left = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        here = f"{path}.{name}".lstrip(".")
        if not field.is_required() and value == field.get_default(call_default_factory=True):
            left.append(here)
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        for item in items:
            if isinstance(item, BaseModel):
                left += _defaults_left(item, here)
    return left


def _optional_fields(model: type[BaseModel], path: str = "") -> dict[str, Any]:
    """The default of every field (of `model` and the models inside it) that accepts None, by path."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        here = f"{path}.{name}".lstrip(".")
        todo = [field.annotation]
        while todo:
            t = todo.pop()
            if t is type(None):
                out[here] = None if field.is_required() else field.get_default(call_default_factory=True)
            elif isinstance(t, type) and issubclass(t, BaseModel):
                out.update(_optional_fields(t, here))
            else:
                todo += get_args(t)
    return out


def test_every_setting_reaches_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _value("", ServiceSettings)
    parent = load_settings(None, **values)
    assert _defaults_left(parent) == [], "the walk left these at their defaults: give them a SHAPED value"
    child = through_child(parent, monkeypatch)
    assert type(child).model_fields.keys() == ServiceSettings.model_fields.keys()
    # SecretStr compares by value; a secret field typed plain SecretStr (not `Secret`) arrives masked
    assert child.model_dump() == parent.model_dump()
    assert child.custom_scopes["custom:walk:read"].subscopes == ["custom:walk:read"]
    dumped = child.model_dump_json()
    for secret in ("database_url", "secret_key", "auth.dummy_password", "proxy.auth_token", "services.api_token",
                   "webhooks.secret"):
        assert f"secret-of-{secret}-" not in dumped and f"secret-of-{secret}-" not in repr(child)
    assert child.auth.crypt_keys == parent.auth.crypt_keys == [bytes.fromhex(WALK_CRYPT_KEY)]
    assert WALK_CRYPT_KEY not in dumped and WALK_CRYPT_KEY not in repr(child)


def test_the_walk_refuses_a_type_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="cannot set when"):
        _value("when", datetime.datetime)


def test_settings_left_unset_stay_unset_in_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    # None is not written to the child: that is only exact while every setting that may be None
    # defaults to None
    assert {path: default for path, default in _optional_fields(ServiceSettings).items() if default is not None} == {}
    monkeypatch.setenv("FLEETHUB_NATS_URL", "nats://127.0.0.1:1")
    parent = load_settings()
    child = through_child(parent, monkeypatch)
    assert child.model_dump() == parent.model_dump() and child.nats_url == "nats://127.0.0.1:1"
    assert "nats_url" in child.model_fields_set and "database_url" not in child.model_fields_set


def test_a_copy_with_updates_reaches_the_child_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # as the proxy supervisor makes its workers' settings
    parent = load_settings(proxy={"host": "0.0.0.0", "workers": 4, "trusted_proxies": ["10.0.0.0/8"]})
    worker = parent.model_copy(update={"proxy": parent.proxy.model_copy(update={"port": 8123, "workers": 1})})
    child = through_child(worker, monkeypatch)
    assert child.model_dump() == worker.model_dump() and (child.proxy.port, child.proxy.workers) == (8123, 1)


def test_the_child_takes_the_parents_file_and_variables_as_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text('[proxy]\nport = 9000\nhost = "0.0.0.0"\n[custom_scopes."custom:data:read"]\ndescription = "d"\n')
    monkeypatch.setenv("FLEETHUB_PROXY__PORT", "9100")
    parent = load_settings(cfg)
    assert (parent.proxy.port, parent.proxy.host) == (9100, "0.0.0.0")  # the file < FLEETHUB_* variables
    child = through_child(parent, monkeypatch)
    monkeypatch.setenv("FLEETHUB_PROXY__PORT", "1")  # a child's own variables are not read
    assert load_settings().proxy.port == 9100 and child.custom_scopes == parent.custom_scopes
    assert load_settings(proxy={"port": 9200}).proxy.port == 9200  # overrides still win
    with pytest.raises(ConfigError, match=f"{SETTINGS_VAR}.*replaces the config file"):
        load_settings(cfg)


def test_broken_handed_down_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, match in (("{", "not valid JSON"), ("[]", "JSON object"), ('{"proxy": {"port": -1}}', r"proxy\.port")):
        monkeypatch.setenv(SETTINGS_VAR, text)
        with pytest.raises(ConfigError, match=f"{SETTINGS_VAR}.*{match}"):
            load_settings()


def test_settings_too_large_for_the_environment_are_refused() -> None:
    huge = load_settings(services=[{"name": "big", "info": {"blob": "x" * 140_000}}])
    with pytest.raises(ConfigError, match="too large"):
        child_env(huge)


def test_user_servers_and_managed_services_never_see_the_handed_down_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(database_url="postgresql://u:s3cr3tpw@h/d",
                             services=[{"name": "svc", "command": ["x"], "api_token": "t" * 32}])
    monkeypatch.setenv(SETTINGS_VAR, child_env(settings)[SETTINGS_VAR])  # as in a spawner worker
    for env in (server_env(settings, "k" * 40, "alice", "", "spawn1"),
                service_env(settings, "k" * 40, settings.services[0])):
        assert not [k for k in env if k.startswith("FLEETHUB_")]
        assert not [k for k, v in env.items() if "s3cr3tpw" in v]


def test_crypt_keys_come_from_the_setting_or_jupyterhubs_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    one, two = bytes(range(32)), bytes(range(32, 64))
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", f"{base64.urlsafe_b64encode(one).decode()}; {two.hex()};")
    assert load_settings(None).auth.crypt_keys == [one, two]  # `;`-separated, base64 or hex, first encrypts
    assert load_settings(None, auth={"crypt_key": [two.hex()]}).auth.crypt_keys == [two]  # the setting wins
    monkeypatch.setenv("FLEETHUB_AUTH__CRYPT_KEY", f'["{base64.b64encode(two).decode()}"]')
    assert load_settings(None).auth.crypt_keys == [two]
    monkeypatch.delenv("FLEETHUB_AUTH__CRYPT_KEY")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "not-a-key-" + "s3cr3t" * 3)
    with pytest.raises(ConfigError, match="JUPYTERHUB_CRYPT_KEY") as err:
        load_settings(None)
    assert "s3cr3t" not in str(err.value)  # the error names the setting, never the key
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY")
    assert load_settings(None).auth.crypt_keys == []
