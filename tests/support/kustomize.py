"""A renderer for the subset of kustomize deploy/kubernetes uses: `resources` (plain files), `namespace`
and `images` (newName/newTag). Anything else in a kustomization.yaml is refused, so the test that
validates the rendering can not silently miss a transformation kustomize would apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def kustomization(directory: Path) -> dict[str, Any]:
    """The kustomization of `directory`; raises ValueError for a field outside the supported subset."""
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(data) - SUPPORTED
    if unknown:
        raise ValueError(f"kustomization.yaml uses {sorted(unknown)}, which tests/support/kustomize.py does not render")
    return data


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _set_image(container: dict[str, Any], images: list[dict[str, str]]) -> None:
    name, _, tag = container["image"].partition(":")
    for rule in images:
        if rule["name"] == name:
            container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag or 'latest')}"


def render(directory: Path) -> list[dict[str, Any]]:
    """Every object of the kustomization in `directory`, transformed as kustomize would."""
    k = kustomization(directory)
    objects: list[dict[str, Any]] = []
    for resource in k["resources"]:
        for obj in yaml.safe_load_all((directory / resource).read_text()):
            if obj is None:
                continue
            if "namespace" in k and obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
            for container in _containers(obj):
                _set_image(container, k.get("images", []))
            objects.append(obj)
    return objects
