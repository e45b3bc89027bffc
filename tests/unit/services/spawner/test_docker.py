"""The docker backend's pure parts: container names, the create request, limits, the engine's address,
and the choice of an image among the allowed ones (`configure_docker`, which the api turns into a 400)."""

from __future__ import annotations

import pytest

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.backends.docker import (
    DockerBackend,
    container_name,
    create_request,
    escape,
    resources,
    volume_binds,
)
from fleethub.services.spawner.backends.docker_engine import demultiplex, parse_address
from fleethub.shared.backend_options import configure_docker
from fleethub.shared.errors import BadRequest, ConfigError
from fleethub.shared.profiles import resolve
from fleethub.shared.settings import SpawnerSettings, load_settings

TEMPLATE = "jupyter-{username}{servername_suffix}"


def test_container_names_are_valid_and_never_shared() -> None:
    assert container_name(TEMPLATE, "alice", "") == "jupyter-alice"
    assert container_name(TEMPLATE, "alice", "gpu") == "jupyter-alice.gpu"
    assert container_name(TEMPLATE, "Ann.B@x", "") == "jupyter--41nn-2e-42-40x"
    # the escape of '-' and the '.' of the suffix keep user "a-b" apart from user "a"'s server "b"
    pairs = [("a-b", ""), ("a", "b"), ("a", "2db"), ("a-2db", ""), ("a.b", ""), ("é", "")]
    names = {container_name(TEMPLATE, user, server) for user, server in pairs}
    assert len(names) == len(pairs)
    assert all(n.replace("-", "").replace(".", "").isalnum() and n.isascii() for n in names)
    assert escape("é") == "-c3-a9"


def test_volumes_limits_and_the_create_request() -> None:
    config = SpawnerSettings.model_validate({
        "cmd": ["jupyterhub-singleuser"], "args": ["--debug"], "mem_limit": "1G", "cpu_limit": 1.5,
        "mem_guarantee": "256M", "cpu_guarantee": 0.5, "environment": {"TEAM": "x", "LANG": "C.UTF-8"},
        "docker": {"image": "img:1", "volumes": {"/data/{username}": "/home/{username}/data:ro",
                                                 "vol-{username}": "/srv"},
                   "extra_create_kwargs": {"User": "1000", "Labels": {"team": "a", "fleethub.user": "mallory"}},
                   "extra_host_config": {"ShmSize": 1024}},
    })
    assert volume_binds(config.docker.volumes, "Bo b") == ["/data/-42o-20b:/home/-42o-20b/data:ro",
                                                           "vol--42o-20b:/srv"]
    assert resources(config) == {"Memory": 1024**3, "MemoryReservation": 256 * 1024**2,
                                 "NanoCpus": 1_500_000_000, "CpuShares": 512}
    spec = ServerSpec(user="bob", server_name="", spawn_id="s1", prefix="/user/bob/", config=config,
                      env={"JUPYTERHUB_API_TOKEN": "t", "PATH": "/host/venv/bin", "HOME": "/root",
                           "LANG": "C.UTF-8", "TEAM": "x"})
    body = create_request(spec, {"ip": "127.0.0.1", "port": 4321})
    assert body["Image"] == "img:1" and body["Cmd"] == ["jupyterhub-singleuser", "--debug"]
    assert body["User"] == "1000"
    env = dict(item.split("=", 1) for item in body["Env"])
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:4321/user/bob/"
    assert env["FH_SERVER_ID"].endswith(".s1") and env["JUPYTERHUB_API_TOKEN"] == "t"
    # the worker's PATH and the host account's HOME describe another machine; spawner.environment wins
    assert "PATH" not in env and "HOME" not in env and env["LANG"] == "C.UTF-8" and env["TEAM"] == "x"
    assert body["Labels"] == {"team": "a", "fleethub.user": "bob", "fleethub.server": "",
                              "fleethub.spawn_id": "s1"}
    host = body["HostConfig"]
    assert host["NetworkMode"] == "host" and host["ShmSize"] == 1024 and host["Memory"] == 1024**3
    assert host["Binds"] == ["/data/bob:/home/bob/data:ro", "vol-bob:/srv"]
    assert host["CapDrop"] == ["NET_RAW"]  # no capture of the host's loopback traffic


def test_an_empty_cmd_runs_the_images_own() -> None:
    config = SpawnerSettings.model_validate({"docker": {"cmd": []}})
    spec = ServerSpec(user="u", server_name="", spawn_id="s", prefix="/user/u/", env={}, config=config)
    assert "Cmd" not in create_request(spec, {"ip": "127.0.0.1", "port": 1})


def test_the_log_stream_is_demultiplexed() -> None:
    frames = b"".join(bytes([kind, 0, 0, 0]) + len(text).to_bytes(4, "big") + text
                      for kind, text in ((1, b"out line\n"), (2, b"err line\n"), (1, b"")))
    assert demultiplex(frames) == b"out line\nerr line\n"
    assert demultiplex(frames[:-3]) == b"out line\nerr line\n"  # a cut header is ignored


def test_engine_addresses() -> None:
    unix = parse_address("unix:///run/x/docker.sock")
    assert unix.socket == "/run/x/docker.sock" and unix.hostname is None
    tcp = parse_address("tcp://engine.example:2376")
    assert tcp.socket is None and tcp.base_url == "http://engine.example:2376" and tcp.hostname == "engine.example"
    assert parse_address("tcp://engine").base_url == "http://engine:2375"
    for bad in ("ssh://me@engine", "tcp://", "unix://"):
        with pytest.raises(ValueError, match="address"):
            parse_address(bad)
    with pytest.raises(ConfigError, match=r"spawner\.docker\.host"):
        DockerBackend(load_settings(None, spawner={"docker": {"host": "ssh://me@engine"}}))


def test_the_identity_is_the_name_and_holds_no_secret() -> None:
    settings = load_settings(None, spawner={"docker": {"host": "unix:///nowhere.sock", "remove": False}})
    backend = DockerBackend(settings)
    spec = ServerSpec(user="alice", server_name="gpu", spawn_id="s9", prefix="/user/alice/gpu/",
                      env={"JUPYTERHUB_API_TOKEN": "secret-token"}, config=settings.spawner)
    identity = backend.identity(spec)
    assert identity["name"] == "jupyter-alice.gpu" and identity["spawn_id"] == "s9"
    assert identity["network"] == "host" and identity["remove"] is False and identity["ip"] == "127.0.0.1"
    assert "secret-token" not in repr(identity)
    assert backend.target(identity) == f"http://127.0.0.1:{identity['port']}"
    other = backend.identity(spec)
    assert other["name"] == identity["name"]  # an adopter derives the same name


ALLOWED = {"docker": {"image": "base:1", "allowed_images": {"Base": "base:1", "Data science": "ds:2"}}}


def test_an_allowed_image_is_chosen_by_display_name_or_image() -> None:
    config = SpawnerSettings.model_validate(ALLOWED)
    assert configure_docker(config, {"image": "Data science"}).docker.image == "ds:2"
    assert configure_docker(config, {"image": "ds:2"}).docker.image == "ds:2"
    assert configure_docker(config, {"image": ["Base"]}).docker.image == "base:1"  # a form field
    assert configure_docker(config, {}).docker.image == "base:1"
    only = SpawnerSettings.model_validate({"docker": {"image": "only:1"}})
    assert configure_docker(only, {"image": "only:1"}).docker.image == "only:1"


def test_an_image_not_allowed_is_refused() -> None:
    config = SpawnerSettings.model_validate(ALLOWED)
    with pytest.raises(ValueError, match=r"image 'evil:latest' is not allowed; choose one of: Base, Data science"):
        configure_docker(config, {"image": "evil:latest"})
    with pytest.raises(ValueError, match="must be a string"):
        configure_docker(config, {"image": {"x": 1}})
    with pytest.raises(ValueError, match="not allowed"):  # with no allowed list, only the configured image
        configure_docker(SpawnerSettings.model_validate({"docker": {"image": "only:1"}}), {"image": "other:1"})
    # as the api resolves a start: a 400 with the message
    spawner = SpawnerSettings.model_validate({"backend": "docker", **ALLOWED})
    with pytest.raises(BadRequest, match="not allowed") as refused:
        resolve(spawner, {"image": "evil:latest"}, configure_docker_for)
    assert refused.value.status == 400
    assert resolve(spawner, {"image": "Data science"}, configure_docker_for).config.docker.image == "ds:2"


def configure_docker_for(name: str):  # type: ignore[no-untyped-def]
    return configure_docker if name == "docker" else None
