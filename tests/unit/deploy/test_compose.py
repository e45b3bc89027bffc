"""deploy/compose.yml: every service runs a real `fleethub` target with the settings it needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleethub.cli import SERVICES, build_parser
from fleethub.services.spawner.backends import load_backend
from fleethub.services.spawner.backends.docker import DockerBackend
from fleethub.shared.settings import ServiceSettings, load_settings

COMPOSE = Path(__file__).resolve().parents[3] / "deploy" / "compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def fleethub_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image", "").startswith("fleethub")}


def test_every_service_is_a_real_cli_target(compose: dict[str, Any]) -> None:
    services = fleethub_services(compose)
    run_targets = set()
    parser = build_parser()
    for name, svc in services.items():
        cmd = svc["command"]
        args = parser.parse_args(cmd)  # raises SystemExit if the CLI does not know the command
        if cmd[0] == "run":
            run_targets.add(cmd[1])
            assert cmd[1] == name, f"service {name} runs {cmd[1]}"
        else:
            assert cmd in (["migrate"], ["nats-config", "--out", "/keys"]), cmd
        assert args.func is not None
    assert run_targets == set(SERVICES)


def test_replica_counts(compose: dict[str, Any]) -> None:
    services = fleethub_services(compose)
    for name in ("api", "proxy", "spawner"):
        assert services[name]["deploy"]["replicas"] >= 2, name


def interpolate(value: str) -> str:
    """`value` as compose fills it in with none of the variables set (`${NAME:-default}` → default)."""
    assert re.fullmatch(r"([^$]|\$\{[A-Z_]+:-[^}]*\})*", value), f"{value!r}: only ${{NAME:-default}} is expected"
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def settings_of(svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    with monkeypatch.context() as m:
        for key, value in svc["environment"].items():
            m.setenv(key, interpolate(str(value)))
        return load_settings()


def test_each_service_environment_is_valid_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in fleethub_services(compose).items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert env["FLEETHUB_NATS_URL"].startswith("nats://"), name
        assert env["FLEETHUB_DATABASE_URL"].startswith("postgresql://"), name
        settings = settings_of(svc, monkeypatch)
        assert settings.require_database_url().startswith("postgresql+asyncpg://")
        if name in ("auth", "api"):
            listen = getattr(settings, name)
            assert listen.host == "0.0.0.0" and listen.port > 0, name


def test_migrate_runs_before_services(compose: dict[str, Any]) -> None:
    for name, svc in fleethub_services(compose).items():
        if name in ("migrate", "nats-keys"):
            continue
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_nats_requires_credentials_and_each_service_has_only_its_own_seed(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "/keys/authorization.conf" in services["nats"]["command"]
    assert services["nats"]["depends_on"]["nats-keys"]["condition"] == "service_completed_successfully"
    for name in SERVICES:
        (mount,) = [v for v in services[name]["volumes"] if v["source"] == "nats-keys"]
        assert mount["source"] == "nats-keys" and mount["read_only"], name
        assert mount["volume"]["subpath"] == f"{name}.nk", name
        assert mount["target"] == services[name]["environment"]["FLEETHUB_NATS_NKEY_FILE"], name


def test_the_first_admin_password_reaches_auth_alone_as_a_private_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    auth = services["auth"]
    (secret,) = auth["secrets"]
    path = auth["environment"]["FLEETHUB_AUTH__INITIAL_ADMIN_PASSWORD_FILE"]
    assert path == f"/run/secrets/{secret['target']}"
    # 0600 and owned by the image's user: what the auth service demands of the file (first_admin.py)
    assert secret["mode"] == 0o600 and secret["uid"] == "1000" and secret["gid"] == "1000"
    assert "--uid 1000 fleethub" in (COMPOSE.parent / "Dockerfile").read_text()
    assert compose["secrets"][secret["source"]] == {"environment": "FLEETHUB_ADMIN_PASSWORD"}
    assert [name for name, svc in services.items() if "secrets" in svc] == ["auth"]


def test_user_servers_run_as_docker_containers_on_a_network_of_their_own(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    spawner = settings_of(services["spawner"], monkeypatch)
    assert isinstance(load_backend(spawner), DockerBackend)
    network = spawner.spawner.docker.network_name
    (users,) = [key for key, net in compose["networks"].items() if net and net.get("name") == network]
    # the proxies (serving them) and the spawners (checking them) join it; NATS and PostgreSQL do not
    joined = {name for name, svc in services.items() if users in (svc.get("networks") or [])}
    assert joined == {"proxy", "spawner"}
    # every service agrees on the backend (the api routes spawn commands by it)
    for name in SERVICES:
        assert settings_of(services[name], monkeypatch).spawner.backend == "docker", name
    # the engine's socket is mounted where the backend looks for it, in the spawner alone
    socket = spawner.spawner.docker.engine_address().removeprefix("unix://")
    mounts = {name: [v["target"] for v in svc.get("volumes", []) if isinstance(v, dict) and v["type"] == "bind"]
              for name, svc in services.items()}
    assert {name for name, targets in mounts.items() if targets} == {"spawner"} and mounts["spawner"] == [socket]
    assert services["spawner"]["group_add"] == ["${DOCKER_GID:-999}"]
    # the image is pulled by a one-shot service before the spawners start (the backend never pulls)
    pull = services["spawner"]["depends_on"]["singleuser-image"]
    assert pull["condition"] == "service_completed_successfully"
    assert interpolate(services["singleuser-image"]["image"]) == spawner.spawner.docker.image
    # user servers call the hub API through the proxies: the name resolves there and a proxy accepts the Host
    host = spawner.hub_api_url.split("/")[2]
    assert host.split(":")[0] in services["proxy"]["networks"][users]["aliases"]
    proxy = settings_of(services["proxy"], monkeypatch)
    assert proxy.hub_api_url == spawner.hub_api_url and proxy.proxy.port == int(host.split(":")[1])
    # the spawn logs go to a directory the image's user owns
    assert str(spawner.data_dir).startswith("/home/fleethub/")
    assert "--create-home" in (COMPOSE.parent / "Dockerfile").read_text()
