"""The user's auth_state in a real spawner worker: read and decrypted with `auth.enable_auth_state`, handed to
the authenticator's `pre_spawn_start` (a third-party authenticator given by import path) and then to the
pre-spawn hook, and so into the running server's environment — never into what is stored in plain."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.crypt import SEALED, AuthStateCrypt
from fleethub.shared.db.models import User
from tests.integration.spawner.test_hooks import REPO, _environ
from tests.integration.spawner.test_spawner import Harness, _is, harness, spawn_cmd
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration
__all__ = ["harness"]

AUTHENTICATOR = "tests.support.third_party_auth:ScriptedAuthenticator"
HOOK = "tests.support.spawn_hooks:saw_auth_state"


def _start_worker(h: Harness, tmp_path: Path, *, enabled: bool, key: bytes | None = None) -> None:
    auth: dict[str, Any] = {"authenticator": AUTHENTICATOR, "enable_auth_state": enabled}
    if key is not None:
        auth["crypt_key"] = [base64.urlsafe_b64encode(key).decode()]
    h.cluster.start("spawner", extra_env={"PYTHONPATH": str(REPO)}, auth=auth,
                    spawner={"pre_spawn_hook": HOOK,
                             "environment": {"FAKE_ENV_DUMP": str(tmp_path / "env-{username}.json")}})


async def _user_with_state(h: Harness, name: str, stored: dict[str, Any] | None) -> None:
    async with h.sessions() as s, s.begin():
        await s.execute(insert(User).values(name=name, auth_state=stored)
                        .on_conflict_do_update(index_elements=["name"], set_={"auth_state": stored}))


async def _raw(h: Harness, sql: str, **params: Any) -> str:
    async with h.sessions() as s:
        return str((await s.execute(text(sql), params)).scalar_one())


async def test_pre_spawn_start_gets_the_decrypted_auth_state_and_the_server_sees_it(
        harness: Harness, tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    token = f"upstream-{secrets.token_hex(8)}"
    _start_worker(harness, tmp_path, enabled=True, key=key)
    await _user_with_state(harness, "sam", AuthStateCrypt([key]).seal({"token": token}))
    cmd = spawn_cmd("sam")
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("sam"), "running"), timeout=20, what=f"running\n{harness.cluster.logs()}")

    env = json.loads((tmp_path / "env-sam.json").read_text())  # as the running server sees its environment
    assert env["UPSTREAM_TOKEN"] == token, "pre_spawn_start put the plaintext token in"
    assert env["HOOK_SAW_TOKEN"] == token, "the pre-spawn hook ran after it and saw spec.auth_state"
    row = await harness.row("sam")
    assert row is not None and _environ(row.state["pid"])["UPSTREAM_TOKEN"] == token
    # at rest: sealed in users, absent from the backend's state; and never in the worker's log
    column = await _raw(harness, "SELECT auth_state::text FROM users WHERE name = 'sam'")
    assert SEALED in column and token not in column
    state = await _raw(harness, "SELECT state::text FROM server_states WHERE user_name = 'sam'")
    assert token not in state
    assert token not in harness.cluster.logs()


async def test_a_refusing_pre_spawn_start_fails_the_spawn_and_without_auth_state_nothing_is_read(
        harness: Harness, tmp_path: Path) -> None:
    _start_worker(harness, tmp_path, enabled=False)
    await _user_with_state(harness, "suspended-sue", None)
    refused = spawn_cmd("suspended-sue")
    await harness.spawn(refused)
    await wait_for(lambda: _is(harness.status("suspended-sue"), "failed"), timeout=20, what="failed")
    row = await harness.row("suspended-sue")
    assert row is not None and row.message == "suspended-sue's upstream account is suspended"
    assert row.state == {}, "nothing was planned nor started"

    # auth_state off: the stored state (even a plain one) is not read; the spec carries none
    await _user_with_state(harness, "tom", {"token": "stored-but-not-enabled"})
    await harness.spawn(spawn_cmd("tom"))
    await wait_for(lambda: _is(harness.status("tom"), "running"), timeout=20, what="running")
    env = json.loads((tmp_path / "env-tom.json").read_text())
    assert env["UPSTREAM_TOKEN"] == "none" and env["HOOK_SAW_TOKEN"] == "none"
