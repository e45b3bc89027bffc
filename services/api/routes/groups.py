"""`/hub/api/groups`: groups, their members and properties."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/hub/api")
