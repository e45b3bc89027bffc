"""The environment of a user server: the worker's allow-listed variables (`spawner.env_keep`), the user's
account, JupyterHub's `JUPYTERHUB_*` contract (jupyterhub-contract.md §c.1) and `spawner.environment`.

Built here, once per spawn, for every backend (`ServerSpec.env`): nothing else of the worker's environment
(its settings with the database password and hub key, cloud credentials, ...) reaches a server.
"""

from __future__ import annotations

import json
import os
import pwd

from fleethub.shared.backend_settings import parse_size
from fleethub.shared.baseurl import public_path
from fleethub.shared.names import client_id, server_prefix, url_escape
from fleethub.shared.security import server_token
from fleethub.shared.settings import ServiceSettings, SpawnerSettings, kept_environment


def _account(user: str) -> dict[str, str]:
    try:
        pw = pwd.getpwnam(user)
        return {"USER": user, "HOME": pw.pw_dir, "SHELL": pw.pw_shell}
    except KeyError:
        # no Unix account of that name: the server runs as the worker's user, in the worker's home
        me = pwd.getpwuid(os.getuid())
        return {"USER": user, "HOME": me.pw_dir, "SHELL": me.pw_shell or "/bin/sh"}


def limits_env(config: SpawnerSettings) -> dict[str, str]:
    """`MEM_LIMIT`, `MEM_GUARANTEE` (bytes), `CPU_LIMIT`, `CPU_GUARANTEE` (CPUs) of the limits that are set,
    as JupyterHub exports them to a server."""
    env = {}
    for var, size in (("MEM_LIMIT", config.mem_limit), ("MEM_GUARANTEE", config.mem_guarantee)):
        if size is not None:
            env[var] = str(parse_size(size))
    for var, cpus in (("CPU_LIMIT", config.cpu_limit), ("CPU_GUARANTEE", config.cpu_guarantee)):
        if cpus is not None:
            env[var] = f"{cpus:g}"
    return env


def server_env(settings: ServiceSettings, secret_key: str, user: str, server_name: str,
               spawn_id: str, config: SpawnerSettings | None = None) -> dict[str, str]:
    """The environment for one spawn (without `JUPYTERHUB_SERVICE_URL`, which the backend adds).

    `config`: the spawn's effective `[spawner]` settings (its profile's); default `settings.spawner`.
    """
    spawner = config or settings.spawner
    prefix = public_path(settings.base_url, server_prefix(user, server_name))
    token = server_token(secret_key, spawn_id)
    access = json.dumps([f"access:servers!server={user}/{server_name}", f"access:servers!user={user}"])
    api_url = settings.hub_api_url
    # of the worker's own environment only the allow list (as JupyterHub's env_keep)
    env = kept_environment(spawner.env_keep)
    env.update(_account(user))
    env.update(
        {
            "JUPYTERHUB_API_TOKEN": token,
            "JPY_API_TOKEN": token,
            "JUPYTERHUB_CLIENT_ID": client_id(user, server_name),
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": access,
            "JUPYTERHUB_OAUTH_SCOPES": access,
            "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": "[]",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_SERVER_NAME": server_name,
            "JUPYTERHUB_API_URL": api_url,
            "JUPYTERHUB_ACTIVITY_URL": f"{api_url}/users/{url_escape(user)}/activity",
            "JUPYTERHUB_BASE_URL": settings.base_url,
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_HOST": "",
            "JUPYTERHUB_PUBLIC_URL": "",
            "JUPYTERHUB_PUBLIC_HUB_URL": "",
            "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
        }
    )
    values = {"username": user, "servername": server_name, "base_url": "/"}
    if spawner.notebook_dir:
        env["JUPYTERHUB_ROOT_DIR"] = _format(spawner.notebook_dir, values)
    if spawner.default_url:
        env["JUPYTERHUB_DEFAULT_URL"] = _format(spawner.default_url, values)
    env.update(limits_env(spawner))
    env.update({k: _format(v, values) for k, v in spawner.environment.items()})
    return env


def _format(template: str, values: dict[str, str]) -> str:
    """`{username}`, `{servername}` and `{base_url}` filled in, as JupyterHub formats spawner settings;
    any other brace is left as written."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out
