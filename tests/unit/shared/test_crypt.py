"""auth_state sealing: the first key encrypts, any key opens, rotation, and what no key opens."""

from __future__ import annotations

import json
import logging

import pytest

from fleethub.shared.crypt import SEALED, AuthStateCrypt, is_sealed

OLD, NEW, OTHER = bytes(32), bytes(range(32)), bytes(range(1, 33))
STATE = {"token": "plain-secret", "n": [1, 2]}


def test_sealed_with_the_first_key_and_opened_with_any() -> None:
    sealed = AuthStateCrypt([OLD]).seal(STATE)
    assert is_sealed(sealed) and "plain-secret" not in json.dumps(sealed)
    assert AuthStateCrypt([NEW, OLD]).open(sealed) == STATE
    rotated = AuthStateCrypt([NEW, OLD]).reseal(sealed)
    assert rotated is not None and AuthStateCrypt([NEW]).open(rotated) == STATE
    assert AuthStateCrypt([NEW, OLD]).reseal(rotated) is None  # already under the first key


def test_plaintext_without_a_key_and_sealed_once_a_key_comes() -> None:
    none = AuthStateCrypt([])
    assert not none.enabled and none.seal(STATE) == STATE and none.open(STATE) == STATE
    assert none.reseal(STATE) is None
    resealed = AuthStateCrypt([NEW]).reseal(STATE)
    assert is_sealed(resealed) and AuthStateCrypt([NEW]).open(resealed) == STATE


def test_what_no_key_opens_is_null_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sealed = AuthStateCrypt([OLD]).seal(STATE)
    assert AuthStateCrypt([OTHER]).open(sealed, "dana") is None
    assert AuthStateCrypt([]).open(sealed, "dana") is None
    assert AuthStateCrypt([OTHER]).open({SEALED: "garbage"}, "dana") is None
    assert AuthStateCrypt([OTHER]).reseal(sealed) is None  # left as it is
    assert len([r for r in caplog.records if "dana" in r.getMessage()]) == 3
