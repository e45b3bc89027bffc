"""`/hub/static/<file>` (the packaged `fleethub/static/`: the stylesheet and the pages' scripts) and
`/hub/logo` (`[pages] logo_file`).

A URL made by `static_url` carries the file's version (`?v=<hash>`): answered with that version, the file is
cached for a year (`immutable`); without it, or with another version, the browser must revalidate (`no-cache`,
an ETag for a 304). Only regular files directly in the package's folders are served: no listing, no dot files,
nothing outside (`..`, symbolic links resolved first).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from fleethub.services.api.deps import Runtime
from fleethub.shared.errors import NotFound
from fleethub.shared.templating import STATIC_DIR, file_version, static_version

router = APIRouter()

LONG_CACHE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# the types of what we ship and of usual logos; a name's type never depends on the machine's mime.types
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".webp": "image/webp", ".ico": "image/vnd.microsoft.icon", ".woff2": "font/woff2", ".json": "application/json",
         ".txt": "text/plain; charset=utf-8"}


def content_type(path: Path) -> str:
    """The Content-Type of a served file, by its suffix (unknown: application/octet-stream)."""
    return TYPES.get(path.suffix.lower(), "application/octet-stream")


def packaged_file(path: str) -> Path | None:
    """The file of `fleethub/static/` that `path` (URL-decoded, relative) names; None for anything else."""
    parts = path.split("/")
    if not path or any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    root = STATIC_DIR.resolve()
    file = (root / path).resolve()
    if not file.is_relative_to(root) or not file.is_file():
        return None
    return file


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in (tag.strip().removeprefix("W/") for tag in wanted.split(","))


def _cache_headers(version: str, asked: str) -> dict[str, str]:
    return {"Cache-Control": LONG_CACHE if asked == version else REVALIDATE, "ETag": f'"{version}"'}


@router.api_route("/hub/static/{path:path}", methods=["GET", "HEAD"])
async def static_file(request: Request, path: str, v: str = "") -> Response:
    file = packaged_file(path)
    version = static_version(str(file.relative_to(STATIC_DIR.resolve()))) if file is not None else None
    if file is None or version is None:
        raise NotFound("No such file.")
    headers = _cache_headers(version, v)
    if _not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return FileResponse(file, headers=headers, media_type=content_type(file))


@router.api_route("/hub/logo", methods=["GET", "HEAD"])
async def logo(request: Request, runtime: Runtime, v: str = "") -> Response:
    """The `[pages] logo_file` (404 without one), read each time: a replaced file shows at once."""
    path = runtime.settings.pages.logo_file
    if path is None:
        raise NotFound("This hub has no logo.")
    try:
        data = await run_in_threadpool(path.read_bytes)
    except OSError:
        raise NotFound("This hub has no logo.") from None
    headers = _cache_headers(file_version(data), v)
    if _not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(data, headers=headers, media_type=content_type(path))  # the server drops it for HEAD
