"""`/hub/api/services`: configured and runtime external services."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/hub/api")
