"""Spawner backends: the interface and its choice (`base`), and the built-in `local` backend (`local`)."""

from fleethub.services.spawner.backends.base import ENTRY_POINT_GROUP, Backend, ServerSpec, load_backend

__all__ = ["ENTRY_POINT_GROUP", "Backend", "ServerSpec", "load_backend"]
