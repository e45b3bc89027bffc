"""`/hub/api/shares`, `/hub/api/share-codes` and `/users|groups/{name}/shared`: sharing servers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/hub/api")
