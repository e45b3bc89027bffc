"""Small socket helpers shared by the embedded servers, the local backend, the tests and the benchmarks."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that nothing listens on right now.

    Args:
        host: the address the port is for.

    Returns:
        A port number the kernel picked; another process may still take it before we bind it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
