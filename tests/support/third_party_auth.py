"""A third-party authenticator and post-auth hooks for tests, named by import path
(`auth.authenticator = "tests.support.third_party_auth:ScriptedAuthenticator"`,
`auth.post_auth_hook = "tests.support.third_party_auth:tag_or_refuse"`).

The test scripts the authenticator through JSON files in the hub's `data_dir` (so it works the same in
an in-process app and in a service process):
- `scripted-logins.json`: {name: {"groups": [...], "auth_state": {...}}}: what a login of `name` answers
  (default: no groups known, auth_state {"token": "login-<name>"});
- `scripted-refresh.json`: {name: true | false | {AuthUser fields}}: what `refresh_user` answers (default
  true); each call is appended to `scripted-refresh-calls.txt`.
The password of every user is `<name>-password`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.spawner.backends import ServerSpec
from fleethub.shared.authenticators import Authenticator, AuthUser

LOGINS = "scripted-logins.json"
REFRESH = "scripted-refresh.json"
REFRESH_CALLS = "scripted-refresh-calls.txt"


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def script(data_dir: Path, file: str, **answers: Any) -> None:
    """Set what the authenticator answers for these users (merged into the file)."""
    path = data_dir / file
    path.write_text(json.dumps({**_read(path), **answers}))


def refresh_calls(data_dir: Path) -> list[str]:
    """The users `refresh_user` was called for, in order."""
    path = data_dir / REFRESH_CALLS
    return path.read_text().split() if path.exists() else []


class ScriptedAuthenticator(Authenticator):
    """A form login answering what the test scripted; its own allow rule lets everyone in."""

    name = "scripted"

    @property
    def grants_access(self) -> bool:
        return True

    def _path(self, file: str) -> Path:
        return self.settings.data_dir / file

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        name = self.normalize_name(username)
        if name is None or password != f"{name}-password":
            return None
        scripted = _read(self._path(LOGINS)).get(name, {})
        return AuthUser(name, groups=scripted.get("groups"), allowed=True,
                        auth_state=scripted.get("auth_state", {"token": f"login-{name}"}))

    async def refresh_user(self, user: AuthUser) -> AuthUser | bool:
        with open(self._path(REFRESH_CALLS), "a") as f:
            f.write(user.name + "\n")
        answer = _read(self._path(REFRESH)).get(user.name, True)
        if isinstance(answer, bool):
            return answer
        return user.with_(**answer)

    async def pre_spawn_start(self, user: AuthUser, spec: ServerSpec) -> ServerSpec | None:
        """The server gets `UPSTREAM_TOKEN` from the user's auth_state ("none" without one); users named
        `suspended*` are refused."""
        if user.name.startswith("suspended"):
            raise PermissionError(f"{user.name}'s upstream account is suspended")
        token = (user.auth_state or {}).get("token", "none")
        return dataclasses.replace(spec, env={**spec.env, "UPSTREAM_TOKEN": str(token)})


def tag_or_refuse(authenticator: Authenticator, user: AuthUser) -> AuthUser | None:
    """A post-auth hook (plain function): users named `refused*` are refused; everyone else gets the
    group `hooked` added to what the authenticator said."""
    if user.name.startswith("refused"):
        return None
    return user.with_(groups=[*(user.groups or []), "hooked"])
