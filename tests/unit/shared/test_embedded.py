"""Unit tests of the embedded-server helpers that need no running server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from fleethub.shared.embedded import (
    EmbeddedError,
    EmbeddedNats,
    EmbeddedPostgres,
    free_port,
    nats_server_binary,
    postgres_bin_dir,
)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
        s.listen()


def test_nats_server_binary_is_executable() -> None:
    path = nats_server_binary()
    assert path.name == "nats-server"
    assert path.is_file() and os.access(path, os.X_OK)


def test_postgres_bin_dir_has_the_server_and_initdb() -> None:
    bin_dir = postgres_bin_dir()
    for tool in ("postgres", "initdb"):
        assert os.access(bin_dir / tool, os.X_OK)


def test_urls(tmp_path: Path) -> None:
    assert EmbeddedNats(tmp_path, port=4999).url == "nats://127.0.0.1:4999"
    pg = EmbeddedPostgres(tmp_path / "pg", port=5999)
    with pytest.raises(EmbeddedError):
        _ = pg.url  # the password exists only once the cluster does
    assert isinstance(EmbeddedError("x"), RuntimeError)


def test_stop_before_start_is_harmless(tmp_path: Path) -> None:
    EmbeddedNats(tmp_path).stop()
    EmbeddedPostgres(tmp_path / "pg").stop()
