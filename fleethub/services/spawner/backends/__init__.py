"""Spawner backends: the interface and its choice (`base`), and the built-in backends (`local`,
`system_user`, `docker`, `batch`)."""

from fleethub.services.spawner.backends.base import BUILTIN, Backend, ServerSpec, load_backend
from fleethub.shared.backend_options import ENTRY_POINT_GROUP

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Backend", "ServerSpec", "load_backend"]
