"""The server routes generated from one table: exactly JupyterHub's paths, each with its methods in order."""

from __future__ import annotations

from collections import defaultdict

from fastapi.routing import APIRoute

from fleethub.services.api.routes.servers import router, server_paths

DEFAULT, SLASH, NAMED = "/users/{name}/server", "/users/{name}/servers/", "/users/{name}/servers/{server_name}"
CRUD = ["GET", "PUT", "PATCH", "POST", "DELETE"]


def test_the_table_makes_jupyterhubs_server_routes() -> None:
    methods: dict[str, list[str]] = defaultdict(list)
    for route in router.routes:
        assert isinstance(route, APIRoute) and route.methods is not None
        methods[route.path.removeprefix("/hub/api")] += sorted(route.methods)
    # per path in registration order: a 405 answers with the first route's methods as `Allow`
    assert methods == {
        DEFAULT: CRUD, SLASH: CRUD, NAMED: CRUD,
        f"{DEFAULT}/progress": ["GET"], f"{NAMED}/progress": ["GET"],
        "/users/{name}/admin-access": ["POST"],
    }


def test_server_paths() -> None:
    assert server_paths("") == (DEFAULT, SLASH, NAMED)
    assert server_paths("/progress") == (f"{DEFAULT}/progress", f"{NAMED}/progress")
