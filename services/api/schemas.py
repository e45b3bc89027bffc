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


async def read_json(request: Any) -> Any:
    """The JSON body of a request whatever its Content-Type (JupyterHub's clients send it either way)."""
    import json

    from shared.errors import BadRequest

    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("Invalid JSON in request body") from None


async def parse_body(request: Any, model: type[BaseModel], *, required: bool) -> Any:
    """The body validated against `model`; errors are 400s that name the field."""
    from pydantic import ValidationError

    from shared.errors import BadRequest

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
        raise BadRequest(f"{loc}: {first.get('msg', 'invalid')}" if loc else str(first.get("msg"))) from None


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
