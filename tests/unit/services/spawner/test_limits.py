"""Resource limits reach the server as JupyterHub exports them: MEM_LIMIT/MEM_GUARANTEE in bytes,
CPU_LIMIT/CPU_GUARANTEE in CPUs; a profile's overrides win over the `[spawner]` ones."""

from __future__ import annotations

import pytest

from fleethub.services.spawner.env import limits_env, server_env
from fleethub.shared.errors import ConfigError
from fleethub.shared.profiles import resolve
from fleethub.shared.settings import load_settings

KEY = "k" * 40


def test_limits_are_exported_in_bytes_and_cpus() -> None:
    settings = load_settings(None, spawner={"mem_limit": "2G", "mem_guarantee": "512M", "cpu_limit": 2,
                                            "cpu_guarantee": 0.5})
    assert limits_env(settings.spawner) == {"MEM_LIMIT": "2147483648", "MEM_GUARANTEE": "536870912",
                                            "CPU_LIMIT": "2", "CPU_GUARANTEE": "0.5"}
    env = server_env(settings, KEY, "alice", "", "spawn1")
    assert env["MEM_LIMIT"] == "2147483648" and env["CPU_LIMIT"] == "2"
    assert env["MEM_GUARANTEE"] == "536870912" and env["CPU_GUARANTEE"] == "0.5"


def test_unset_limits_are_not_exported() -> None:
    settings = load_settings(None, spawner={"mem_limit": "1.5G"})
    env = server_env(settings, KEY, "alice", "", "spawn1")
    assert env["MEM_LIMIT"] == str(int(1.5 * 1024**3))
    assert not {"MEM_GUARANTEE", "CPU_LIMIT", "CPU_GUARANTEE"} & env.keys()
    assert not {"MEM_LIMIT", "CPU_LIMIT"} & server_env(load_settings(None), KEY, "bob", "", "s").keys()


def test_a_profiles_override_reaches_the_server_environment() -> None:
    settings = load_settings(None, spawner={
        "mem_limit": "1G", "cpu_limit": 1,
        "profiles": [
            {"display_name": "Small", "slug": "small", "default": True},
            {"display_name": "Big", "slug": "big", "overrides": {"mem_limit": "8G", "cpu_limit": 4,
                                                                  "cpu_guarantee": 2}},
        ],
    })
    for wanted, mem, cpu in (({}, "1073741824", "1"), ({"profile": "big"}, "8589934592", "4")):
        choice = resolve(settings.spawner, wanted)
        env = server_env(settings, KEY, "alice", "", "spawn1", config=choice.config)
        assert (env["MEM_LIMIT"], env["CPU_LIMIT"]) == (mem, cpu), wanted
    big = resolve(settings.spawner, {"profile": "big"})
    assert server_env(settings, KEY, "alice", "", "s", config=big.config)["CPU_GUARANTEE"] == "2"


@pytest.mark.parametrize("spawner, setting", [
    ({"mem_limit": "2 gigs"}, "mem_limit"),
    ({"cpu_limit": 0}, "cpu_limit"),
    ({"profiles": [{"display_name": "Bad", "slug": "bad", "overrides": {"mem_limit": "lots"}}]}, "mem_limit"),
])
def test_a_bad_limit_is_refused_naming_the_setting(spawner: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(None, spawner=spawner)
