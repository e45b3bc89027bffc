"""JupyterHub's opt-in pagination: `Accept: application/jupyterhub-pagination+json` turns a list into
`{"items", "_pagination": {"offset", "limit", "total", "next"}}` with an absolute `next.url`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from fleethub.shared.baseurl import public_path

PAGINATION_TYPE = "application/jupyterhub-pagination+json"
MAX_LIMIT = 200
DEFAULT_PAGINATED_LIMIT = 50
MAX_OFFSET = 2**63 - 1 - MAX_LIMIT  # OFFSET is a bigint; room left for `offset + limit` in `next`


@dataclass(frozen=True)
class Page:
    """The page a list request asks for: whether it opted in, and the clamped offset and limit."""

    paginated: bool
    offset: int
    limit: int


def page_of(request: Request, offset: int, limit: int | None, *, always: bool = False) -> Page:
    """The page of a list request (`always`: the endpoint only answers in the paginated form).

    Without the opt-in header the default limit is the maximum (200), as JupyterHub does.
    """
    accept = [part.strip().lower() for part in request.headers.get("accept", "").split(",")]
    paginated = always or any(part.split(";")[0] == PAGINATION_TYPE for part in accept)
    default = DEFAULT_PAGINATED_LIMIT if paginated else MAX_LIMIT
    # an offset past PostgreSQL's bigint would fail the query; any offset that large is past the end anyway
    offset = min(max(0, offset), MAX_OFFSET)
    return Page(paginated, offset, min(max(1, limit if limit is not None else default), MAX_LIMIT))


def next_page(request: Request, page: Page, total: int) -> dict[str, Any] | None:
    """`_pagination.next`: null on the last page, else the next offset and limit and the absolute URL of
    that page. The URL's origin is the hub's public URL, never the request's Host (which a client
    chooses, and which clients such as the idle culler follow verbatim)."""
    if page.offset + page.limit >= total:
        return None
    settings = request.state.runtime.settings
    public = urlsplit(settings.hub_public_url)
    here = request.url.include_query_params(offset=page.offset + page.limit, limit=page.limit)
    url = f"{public.scheme}://{public.netloc}{public_path(settings.base_url, here.path)}?{here.query}"
    return {"offset": page.offset + page.limit, "limit": page.limit, "url": url}


def page_response(request: Request, page: Page, items: list[Any], total: int) -> Response:
    """The plain list, or the paginated form with an absolute `next.url` (null on the last page)."""
    if not page.paginated:
        return JSONResponse(items)
    nxt = next_page(request, page, total)
    return JSONResponse({"items": items,
                         "_pagination": {"offset": page.offset, "limit": page.limit, "total": total, "next": nxt}})
