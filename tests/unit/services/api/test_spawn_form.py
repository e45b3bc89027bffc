"""The spawn form's HTML (`spawn.html`): the one Start button when there is nothing to choose, else the
profiles and their backend fields; everything escaped but the backends' own field HTML."""

from __future__ import annotations

from pathlib import Path

from fleethub.services.api.spawn_form import ProfileChoice, offered, offers_options, user_options_of
from fleethub.shared.settings import ServiceSettings, SpawnerSettings
from fleethub.shared.templating import Templates


def _page(owner: str, action: str, profiles: list[ProfileChoice], error: str = "", server_name: str = "") -> str:
    settings = ServiceSettings(data_dir=Path("/nonexistent"))
    return Templates(settings).render("spawn.html", owner=owner, server_name=server_name, action=action,
                                      xsrf="tok<", profiles=profiles, error=error)


def test_nothing_to_choose_is_one_start_button() -> None:
    spawner = SpawnerSettings()
    assert not offers_options(spawner)
    page = _page("alice", "/hub/spawn", offered(spawner))
    assert 'id="spawn_form"' in page and 'value="Start"' in page
    assert 'name="profile"' not in page and "<select" not in page
    assert '<input type="hidden" name="_xsrf" value="tok&lt;">' in page
    assert user_options_of(spawner, {"_xsrf": ["tok"]}) == {}


def test_one_docker_profile_offers_its_images_without_a_radio() -> None:
    spawner = SpawnerSettings.model_validate({"backend": "docker", "docker": {"allowed_images": {"A": "a:1"}}})
    assert offers_options(spawner)
    page = _page("alice", "/hub/spawn", offered(spawner))
    assert 'type="radio"' not in page and '<input type="hidden" name="profile" value="default">' in page
    assert '<select name="image"><option value="A">A (a:1)</option></select>' in page
    assert user_options_of(spawner, {"profile": ["default"], "image": ["A"]}) == {"profile": "default", "image": "A"}


def test_profiles_are_radios_with_the_chosen_one_checked_and_an_error() -> None:
    spawner = SpawnerSettings.model_validate({"profiles": [
        {"display_name": "One", "default": True}, {"display_name": "Two & more", "description": "<b>"}]})
    assert [(c.slug, c.checked) for c in offered(spawner)] == [("one", True), ("two-more", False)]
    assert [(c.slug, c.checked) for c in offered(spawner, "two-more")] == [("one", False), ("two-more", True)]
    assert [c.checked for c in offered(spawner, "nope")] == [True, False]
    page = _page("a<b", "/hub/spawn/a%3Cb", offered(spawner), error="unknown profile '<x>'", server_name="g<")
    assert '<p class="error" role="alert">unknown profile &#39;&lt;x&gt;&#39;</p>' in page
    assert "Start a&lt;b's server <q>g&lt;</q>" in page and "Two &amp; more" in page
    assert 'action="/hub/spawn/a%3Cb"' in page
    assert '<input type="radio" name="profile" value="one" id="profile-one" checked>' in page
    # the description is the radio's description, escaped
    assert ('<input type="radio" name="profile" value="two-more" id="profile-two-more" '
            'aria-describedby="profile-two-more-desc">') in page
    assert '<p class="muted desc" id="profile-two-more-desc">&lt;b&gt;</p>' in page
    assert '<label for="profile-two-more">Two &amp; more</label>' in page


def test_only_the_backends_field_html_is_markup() -> None:
    # a backend's options_form escapes its own values; every other string of a choice is text
    choice = ProfileChoice(slug='x"y', display_name="<i>n</i>", description="<d>", checked=True)
    page = _page("alice", "/hub/spawn", [choice, ProfileChoice(slug="b", display_name="B", description="",
                                                                checked=False)])
    assert 'value="x&#34;y"' in page and "&lt;i&gt;n&lt;/i&gt;" in page and "&lt;d&gt;" in page
    assert "<i>" not in page and "<d>" not in page
    spawner = SpawnerSettings.model_validate({"backend": "docker",
                                              "docker": {"allowed_images": {"<A>": "a:1", "B": "b&c"}}})
    (docker,) = offered(spawner)
    assert '<option value="&lt;A&gt;">&lt;A&gt; (a:1)</option>' in docker.fields
    assert docker.fields in _page("alice", "/hub/spawn", [docker])
