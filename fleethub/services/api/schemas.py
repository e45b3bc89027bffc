"""Request bodies of the api's REST endpoints, and how a body becomes one (errors are 400s)."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from fleethub.shared.errors import BadRequest
from fleethub.shared.http import read_json

M = TypeVar("M", bound=BaseModel)


class UsersCreate(BaseModel):
    """`POST /users`."""

    model_config = ConfigDict(extra="ignore")

    usernames: list[StrictStr] = Field(min_length=1, max_length=10_000)
    admin: StrictBool = False


class UserCreate(BaseModel):
    """`POST /users/{name}`."""

    model_config = ConfigDict(extra="ignore")

    admin: StrictBool = False


class Credentials(BaseModel):
    """The `auth` of a token request made without a token or cookie."""

    model_config = ConfigDict(extra="ignore")

    username: StrictStr = Field(max_length=255)
    password: StrictStr = Field(max_length=1024)


class PasswordSet(BaseModel):
    """`PUT /users/{name}/password` (a fleethub extension): the new password, and the current one when a user
    changes their own."""

    model_config = ConfigDict(extra="forbid")

    password: StrictStr = Field(max_length=1000)
    old_password: StrictStr | None = Field(None, max_length=1000)


class TokenCreate(BaseModel):
    """`POST /users/{name}/tokens`: `expires_in` is an integer (a float is refused, as JupyterHub does)."""

    model_config = ConfigDict(extra="ignore")

    auth: Credentials | None = None
    note: StrictStr | None = Field(None, max_length=1000)
    expires_in: StrictInt | None = Field(None, ge=0, le=10 * 365 * 86400)
    scopes: list[StrictStr] | None = Field(None, max_length=100)
    roles: list[StrictStr] | None = Field(None, max_length=10)


class ServerStop(BaseModel):
    """The optional body of `DELETE /users/{name}/servers/{server_name}`."""

    model_config = ConfigDict(extra="ignore")

    remove: StrictBool = False


async def parse_body(request: Request, model: type[M], *, required: bool) -> M:
    """The JSON body validated against `model`; errors are 400s that name the field."""
    data = await read_json(request)
    if data is None:
        if required:
            raise BadRequest("Request body is required")
        return model()
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = str(first.get("msg", "invalid"))
        raise BadRequest(f"{loc}: {msg}" if loc else msg) from None
