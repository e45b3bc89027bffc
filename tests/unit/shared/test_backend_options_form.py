"""The spawn form's pieces in `fleethub.shared.backend_options`: each backend's fields and the
`user_options` of a posted form."""

from __future__ import annotations

import pytest

from fleethub.shared.backend_options import docker_options_form, options_form_for, options_from_form
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import SpawnerSettings


def test_docker_offers_its_allowed_images_escaped() -> None:
    assert docker_options_form(SpawnerSettings()) == ""  # nothing to choose from
    config = SpawnerSettings.model_validate({"docker": {"image": "b:2", "allowed_images": {"A\"<": "a:1", "B": "b:2"}}})
    html = docker_options_form(config, prefix="box:")
    assert html == ('<label>Image <select name="box:image"><option value="A&quot;&lt;">A&quot;&lt; (a:1)</option>'
                    '<option value="B" selected>B (b:2)</option></select></label>')
    assert 'name="image"' in docker_options_form(config)


def test_the_forms_of_backends() -> None:
    assert options_form_for("docker") is docker_options_form
    assert options_form_for("local") is None and options_form_for("batch") is None
    # a third-party backend's class gives its own (an import path stands for an entry point here)
    form = options_form_for(f"{__name__}:WithForm")
    assert form is not None and form(SpawnerSettings(), prefix="p:") == '<input name="p:gpus">'
    assert options_form_for(f"{__name__}:WithoutForm") is None
    with pytest.raises(ConfigError):
        options_form_for("no-such-backend")


class WithForm:
    @classmethod
    def options_form(cls, config: SpawnerSettings, *, prefix: str = "") -> str:
        return f'<input name="{prefix}gpus">'


class WithoutForm:
    pass


def test_options_from_form() -> None:
    slugs = ("small", "box")
    fields = {"_xsrf": ["t"], "profile": ["box"], "box:image": ["Base"], "small:image": ["x"], "tags": ["a", "b"],
              "other:x": ["kept: not a profile's"], "empty": []}
    assert options_from_form(fields, profiles=slugs, default="small") == {
        "profile": "box", "image": "Base", "tags": ["a", "b"], "other:x": "kept: not a profile's"}
    # no profile posted: the default one's fields
    assert options_from_form({"small:image": ["x"], "box:image": ["y"]}, profiles=slugs, default="small") == {
        "image": "x"}
    # one profile: fields are named as the options
    assert options_from_form({"image": ["Base"], "profile": [""]}, profiles=(), default="default") == {
        "image": "Base", "profile": ""}
