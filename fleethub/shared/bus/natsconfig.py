"""NATS credentials of a hub: one nkey seed per identity of the permission table, each in its own 0600
file in a 0700 directory, and the nats-server `authorization` block listing their public keys with
their permissions (`permissions.grants`). The server config holds no secret: only public keys.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import nkeys

from fleethub.shared.bus.permissions import IDENTITIES, grants
from fleethub.shared.bus.topology import Names

SEED_SUFFIX = ".nk"
AUTH_FILE = "authorization.conf"


def seed_file(directory: Path, identity: str) -> Path:
    """Where the seed of `identity` lives in `directory`."""
    return directory / f"{identity}{SEED_SUFFIX}"


def new_seed() -> bytes:
    """A new user nkey seed (`SU…`)."""
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    """The public key (`U…`) of a user seed."""
    pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def private_dir(directory: Path) -> Path:
    """`directory`, created if missing, and made 0700."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` created 0600 (never readable by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def ensure_seeds(directory: Path) -> dict[str, str]:
    """Make sure every identity has a seed file in `directory` (0700; files 0600), creating only missing
    ones (kept across restarts); returns each identity's public key.

    Raises:
        ValueError: a seed file does not hold a user seed.
    """
    private_dir(directory)
    keys: dict[str, str] = {}
    for identity in IDENTITIES:
        path = seed_file(directory, identity)
        if not path.exists():
            write_private(path, new_seed() + b"\n")
        path.chmod(0o600)
        try:
            keys[identity] = public_key(path.read_bytes())
        except Exception as exc:
            raise ValueError(f"{path} does not hold an nkey user seed: {exc}") from None
    return keys


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in items) + "]"


def authorization_block(public_keys: dict[str, str], namespace: str, webhooks: tuple[str, ...] = ()) -> str:
    """nats-server's `authorization { users = [...] }` for the identities' public keys in `namespace`, the
    api allowed the durables of the webhooks named `webhooks`."""
    names = Names(namespace)
    users = []
    for identity in IDENTITIES:
        p = grants(identity, names, webhooks)
        publish = f"allow: {_list(p.publish)}"
        if p.deny_publish:
            publish += f", deny: {_list(p.deny_publish)}"
        responses = "\n        allow_responses: true" if p.responses else ""
        users.append(
            f"    # {identity}\n"
            f"    {{\n"
            f"      nkey: {json.dumps(public_keys[identity])}\n"
            f"      permissions: {{\n"
            f"        publish: {{ {publish} }}\n"
            f"        subscribe: {{ allow: {_list(p.subscribe)} }}{responses}\n"
            f"      }}\n"
            f"    }}"
        )
    body = "\n".join(users)
    return (f"# fleethub NATS identities of namespace {namespace!r} (generated; public keys only)\n"
            f"authorization {{\n  users = [\n{body}\n  ]\n}}\n")


def write_config(directory: Path, namespace: str, webhooks: tuple[str, ...] = ()) -> Path:
    """Seeds (kept when present) and the authorization block (with the durables of the webhooks named
    `webhooks`) in `directory`; returns the block's file."""
    keys = ensure_seeds(directory)
    path = directory / AUTH_FILE
    write_private(path, authorization_block(keys, namespace, webhooks).encode())
    return path
