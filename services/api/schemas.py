"""Request bodies of the api's REST endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class UsersCreate(BaseModel):
    """`POST /users`."""

    model_config = ConfigDict(extra="ignore")

    usernames: list[str] = Field(min_length=1, max_length=10_000)
    admin: bool = False


class UserCreate(BaseModel):
    """`POST /users/{name}`."""

    model_config = ConfigDict(extra="ignore")

    admin: bool = False


class TokenCreate(BaseModel):
    """`POST /users/{name}/tokens` (an integer `expires_in`; a float is refused, as JupyterHub does)."""

    model_config = ConfigDict(extra="ignore")

    note: str | None = Field(None, max_length=1000)
    expires_in: StrictInt | None = Field(None, ge=0, le=10 * 365 * 86400)
    scopes: list[str] | None = None
    roles: list[str] | None = None


def user_options_from(body: Any) -> dict[str, Any] | None:
    """JupyterHub 6 reads `user_options` from the body; 5.x sent the options as the whole body."""
    if body is None:
        return None
    if not isinstance(body, dict):
        from shared.errors import BadRequest

        raise BadRequest("request body must be a JSON object")
    if "user_options" in body or "display_name" in body:
        opts = body.get("user_options")
        if opts is not None and not isinstance(opts, dict):
            from shared.errors import BadRequest

            raise BadRequest("user_options must be an object")
        return opts
    return body or None
