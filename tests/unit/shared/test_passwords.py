"""The rules of new passwords and the packaged common-password list."""

from __future__ import annotations

import pytest

from fleethub.shared.authenticator_settings import PasswordSettings
from fleethub.shared.errors import BadRequest
from fleethub.shared.passwords import check_password_rules, common_passwords, generate_password


def test_the_common_list_is_packaged_lower_case_and_holds_the_usual_suspects() -> None:
    listed = common_passwords()
    assert len(listed) >= 1000
    assert all(p == p.lower() and p.strip() == p and not p.startswith("#") for p in listed)
    assert {"123456", "password", "qwerty123", "iloveyou", "letmein", "1qaz2wsx", "dragon"} <= listed


@pytest.mark.parametrize(("password", "username", "message"), [
    ("short", "bob", "at least 8 characters"),
    ("x" * 1001, "bob", "at most 1000 characters"),
    ("PassWord1", "bob", "too common"),
    ("Alexander1", "bob", "too common"),
    ("Robertsmith", "robertsmith", "must not be the user name"),
])
def test_rules_refuse(password: str, username: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_password_rules(password, username, PasswordSettings())
    assert message in caught.value.message and password not in caught.value.message


def test_rules_follow_the_settings() -> None:
    check_password_rules("password1", "bob", PasswordSettings(check_common_password=False))
    check_password_rules("abc", "bob", PasswordSettings(minimum_password_length=3, check_common_password=False))
    with pytest.raises(BadRequest, match="at least 30"):
        check_password_rules("a-long-but-not-that-long", "bob", PasswordSettings(minimum_password_length=30))


def test_generated_passwords_pass_the_rules() -> None:
    for rules in (PasswordSettings(), PasswordSettings(minimum_password_length=64)):
        password = generate_password(rules)
        assert len(password) == max(20, rules.minimum_password_length) and password != generate_password(rules)
        check_password_rules(password, "admin", rules)
