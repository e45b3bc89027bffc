"""The spawn form's HTML: the one Start button when there is nothing to choose, else the profiles and
their backend fields."""

from __future__ import annotations

from fleethub.services.api.pages import spawn_page
from fleethub.services.api.spawn_form import offered, offers_options, user_options_of
from fleethub.shared.settings import SpawnerSettings


def test_nothing_to_choose_is_one_start_button() -> None:
    spawner = SpawnerSettings()
    assert not offers_options(spawner)
    page = spawn_page("alice", "/hub/spawn", "tok", offered(spawner))
    assert 'value="Start"' in page and 'name="profile"' not in page and "<select" not in page
    assert user_options_of(spawner, {"_xsrf": ["tok"]}) == {}


def test_one_docker_profile_offers_its_images_without_a_radio() -> None:
    spawner = SpawnerSettings.model_validate({"backend": "docker", "docker": {"allowed_images": {"A": "a:1"}}})
    assert offers_options(spawner)
    page = spawn_page("alice", "/hub/spawn", "tok", offered(spawner))
    assert 'type="radio"' not in page and '<input type="hidden" name="profile" value="default">' in page
    assert '<select name="image"><option value="A">A (a:1)</option></select>' in page
    assert user_options_of(spawner, {"profile": ["default"], "image": ["A"]}) == {"profile": "default", "image": "A"}


def test_profiles_are_radios_with_the_chosen_one_checked_and_an_error() -> None:
    spawner = SpawnerSettings.model_validate({"profiles": [
        {"display_name": "One", "default": True}, {"display_name": "Two & more", "description": "<b>"}]})
    assert [(c.slug, c.checked) for c in offered(spawner)] == [("one", True), ("two-more", False)]
    assert [(c.slug, c.checked) for c in offered(spawner, "two-more")] == [("one", False), ("two-more", True)]
    assert [c.checked for c in offered(spawner, "nope")] == [True, False]
    page = spawn_page("a<b", "/hub/spawn/a%3Cb", "tok", offered(spawner), error="unknown profile '<x>'")
    assert '<p class="err">unknown profile &#x27;&lt;x&gt;&#x27;</p>' in page
    assert "Start a&lt;b's server" in page and "Two &amp; more" in page and "&lt;b&gt;" in page
    assert '<input type="radio" name="profile" value="one" id="profile-one" checked>' in page
