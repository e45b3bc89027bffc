"""`/hub/static/...`: the pages' stylesheet and scripts, shipped in the package (`fleethub/static/`).

A URL made by `static_url` carries a version of the file's content (`?v=`), so it is cached for long; any
other request for the file is revalidated.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from fleethub.shared.errors import NotFound
from fleethub.shared.templating import STATIC_DIR

router = APIRouter()
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
          ".png": "image/png", ".ico": "image/x-icon"}


@router.get("/hub/static/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    base = STATIC_DIR.resolve()
    file = (base / path).resolve()
    if not file.is_relative_to(base) or not file.is_file() or file.suffix not in _TYPES:
        raise NotFound("No such file")
    cache = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
    return FileResponse(file, media_type=_TYPES[file.suffix], headers={"Cache-Control": cache})
