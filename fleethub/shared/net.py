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


def reserved_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on, chosen below the kernel's ephemeral range.

    For a port handed to a process that binds it later: a port from `free_port` lies in the ephemeral
    range, where any socket bound to port 0 meanwhile (another service's own listener) may take it first;
    a port below that range is never given out for port 0.

    Raises:
        OSError: no port between 10000 and the ephemeral range is free.
    """
    import random
    from pathlib import Path

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(10000, max(10001, low)))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port below {low} on {host}")
