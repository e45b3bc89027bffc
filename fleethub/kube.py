"""`fleethub kube-secrets`: what deploy/kubernetes needs that must not live in the repository — one NATS
nkey seed per identity, the NATS authorization block with their public keys, the hub's secret key, the
first admin's password and the database URL — printed as Kubernetes manifests (YAML) on stdout.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from fleethub.shared.bus.natsconfig import AUTH_FILE, authorization_block, new_seed, public_key
from fleethub.shared.bus.permissions import IDENTITIES
from fleethub.shared.errors import ConfigError
from fleethub.shared.passwords import generate_password
from fleethub.shared.settings import ServiceSettings

LABELS = {"app.kubernetes.io/part-of": "fleethub"}
AUTHORIZATION_CONFIGMAP = "fleethub-nats-authorization"


def seed_secret_name(identity: str) -> str:
    """The Secret holding the nkey seed of `identity` (key `seed`)."""
    return f"fleethub-nats-{identity}"


def _object(kind: str, name: str, namespace: str, **body: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": dict(LABELS)}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **body}


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return _object("Secret", name, namespace, type="Opaque", stringData=data)


def manifests(settings: ServiceSettings, *, namespace: str) -> list[dict[str, Any]]:
    """New Secrets (and the authorization ConfigMap) for a hub in Kubernetes namespace `namespace`.

    Raises:
        ConfigError: no database URL is configured.
    """
    if settings.database_url is None:
        raise ConfigError("kube-secrets: set the database URL in FLEETHUB_DATABASE_URL (or database_url in the "
                          "config file): it goes into the fleethub-database Secret")
    seeds = {identity: new_seed() for identity in IDENTITIES}
    keys = {identity: public_key(seed) for identity, seed in seeds.items()}
    objects = [_secret(seed_secret_name(identity), namespace, {"seed": seeds[identity].decode()})
               for identity in IDENTITIES]
    objects.append(_object("ConfigMap", AUTHORIZATION_CONFIGMAP, namespace,
                           data={AUTH_FILE: authorization_block(keys, settings.nats_namespace,
                                                                 tuple(w.name for w in settings.webhooks))}))
    objects.append(_secret("fleethub-hub", namespace, {"secret-key": secrets.token_urlsafe(48)}))
    objects.append(_secret("fleethub-admin", namespace, {"password": generate_password(settings.auth.password)}))
    objects.append(_secret("fleethub-database", namespace, {"url": settings.database_url.get_secret_value()}))
    return objects


def render(objects: list[dict[str, Any]]) -> str:
    """The objects as one YAML stream (each document is JSON, which YAML reads as it is)."""
    return "".join(f"---\n{json.dumps(obj, indent=2)}\n" for obj in objects)


def kube_secrets(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """Print the manifests; the operator applies them once (`| kubectl apply -f -`), before the kustomization."""
    if args.nats_namespace:
        settings = settings.model_copy(update={"nats_namespace": args.nats_namespace})
    print(render(manifests(settings, namespace=args.k8s_namespace)), end="")
    return 0

