"""Profiles and options: which backend and settings a start's user_options choose."""

from __future__ import annotations

import pytest

from fleethub.shared.backend_options import configure_for
from fleethub.shared.backend_settings import parse_size
from fleethub.shared.errors import BadRequest, ConfigError
from fleethub.shared.profiles import resolve, served_backends
from fleethub.shared.settings import SpawnerSettings, load_settings

PROFILES = [
    {"display_name": "Small (this machine)", "description": "2 GB", "overrides": {"mem_limit": "2G"}},
    {"display_name": "Big (Slurm)", "slug": "big", "default": True, "backend": "batch",
     "overrides": {"mem_limit": "64G", "batch": {"req_partition": "gpu", "req_runtime": "8:00:00"}}},
    {"display_name": "Boxed", "slug": "boxed", "backend": "docker",
     "overrides": {"docker": {"image": "base:1", "allowed_images": {"Base": "base:1", "Science": "sci:2"}}}},
]


def _spawner(**kw: object) -> SpawnerSettings:
    return load_settings(spawner=kw).spawner


def test_a_profile_chooses_its_backend_and_merged_settings() -> None:
    s = _spawner(profiles=PROFILES, batch={"req_nprocs": "4"})
    big = resolve(s, {}, configure_for)  # no profile named: the default one
    assert (big.profile, big.backend) == ("big", "batch")
    assert big.config.mem_limit == "64G" and big.config.batch.req_partition == "gpu"
    assert big.config.batch.req_nprocs == "4", "a section is merged key by key, not replaced"
    assert big.config.profiles == [] and big.user_options == {"profile": "big"}
    small = resolve(s, {"profile": "small-this-machine", "x": 1}, configure_for)
    assert (small.backend, small.config.mem_limit) == ("local", "2G")
    assert small.user_options == {"profile": "small-this-machine", "x": 1}
    assert s.mem_limit is None, "the hub's own settings are untouched"


def test_bad_choices_are_400_with_the_choices() -> None:
    s = _spawner(profiles=PROFILES)
    with pytest.raises(BadRequest, match="unknown profile 'huge'; this hub offers: small-this-machine, big, boxed"):
        resolve(s, {"profile": "huge"}, configure_for)
    with pytest.raises(BadRequest, match="must be a string"):
        resolve(s, {"profile": ["big"]}, configure_for)
    with pytest.raises(BadRequest, match="image 'evil' is not allowed; choose one of: Base, Science"):
        resolve(s, {"profile": "boxed", "image": "evil"}, configure_for)
    by_name = resolve(s, {"profile": "boxed", "image": "Science"}, configure_for)
    by_image = resolve(s, {"profile": "boxed", "image": "sci:2"}, configure_for)
    assert by_name.config.docker.image == by_image.config.docker.image == "sci:2"
    assert resolve(s, {"profile": "boxed"}, configure_for).config.docker.image == "base:1"


def test_without_profiles_options_pass_through_untouched() -> None:
    s = _spawner(backend="local")
    choice = resolve(s, {"profile": "anything", "size": "s"}, configure_for)
    assert (choice.backend, choice.user_options) == ("local", {"profile": "anything", "size": "s"})
    assert served_backends(s) == ["local"]


def test_workers_serve_the_named_backends() -> None:
    s = _spawner(profiles=PROFILES)
    assert served_backends(s) == ["local", "batch", "docker"]
    assert served_backends(_spawner(profiles=PROFILES, backends=["batch", "batch"])) == ["batch"]


@pytest.mark.parametrize(("profiles", "message"), [
    ([{"display_name": "A"}, {"display_name": "a"}], "share the slug 'a'"),
    ([{"display_name": "A", "default": True}, {"display_name": "B", "default": True}], "more than one profile"),
    ([{"display_name": "A", "overrides": {"mem_limit": "lots"}}], "profile 'a' overrides: mem_limit"),
    ([{"display_name": "A", "overrides": {"no_such": 1}}], "profile 'a' overrides: no_such"),
    ([{"display_name": "A", "overrides": {"backends": ["x"]}}], "cannot change profiles or backends"),
    ([{"display_name": "A", "slug": "Not A Slug"}], "is not a slug"),
])
def test_bad_profiles_are_refused_at_load(profiles: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _spawner(profiles=profiles)


def test_sizes() -> None:
    assert parse_size("2G") == 2 * 1024**3 and parse_size("512M") == 512 * 1024**2 and parse_size("1.5K") == 1536
    assert parse_size("100") == 100 and parse_size(7) == 7 and parse_size(None) is None
    for bad in ("lots", "-1G", "2X"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_size(bad)
