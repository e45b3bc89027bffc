"""deploy/kubernetes: the kustomization renders to objects the Kubernetes API's schemas accept, and they
fit together (selectors, probe ports, Secrets and ConfigMaps, PDBs, the hub's settings)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import nkeys
import pytest
import yaml

from fleethub.cli import SERVICES, build_parser, main
from fleethub.kube import AUTHORIZATION_CONFIGMAP, manifests, render, seed_secret_name
from fleethub.shared.bus.natsconfig import AUTH_FILE
from fleethub.shared.bus.permissions import IDENTITIES
from fleethub.shared.settings import load_settings
from tests.support.kustomize import kustomization
from tests.support.kustomize import render as kustomize

BASE = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
K8S_VERSION = "1.33"  # validated against this API version's schemas (shipped in the kubernetes-validate wheel)
REPLICAS = {"api": 2, "spawner": 2, "proxy": 2, "auth": 2, "culler": 1}
WORKLOADS = ("Deployment", "StatefulSet")
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def secrets() -> list[Obj]:
    """What `fleethub kube-secrets` prints, for the configuration the ConfigMap holds."""
    return manifests(load_settings(database_url="postgresql://fleethub:pw@db.example.org/fleethub"),
                     namespace="fleethub")


@pytest.fixture(scope="module")
def everything(rendered: list[Obj], secrets: list[Obj]) -> list[Obj]:
    return rendered + secrets


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_file_is_listed_and_nothing_else() -> None:
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization(BASE)["resources"]) == sorted(files)


def test_every_object_validates_against_the_kubernetes_schemas(everything: list[Obj]) -> None:
    assert len(everything) > 20
    for obj in everything:
        # strict: a field the schema does not know (a typo, a misplaced key) fails too
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_catches_a_broken_object(rendered: list[Obj]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(of_kind(rendered, "Deployment")["fleethub-api"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = "ops"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_every_service_is_its_own_deployment_with_its_replicas(rendered: list[Obj]) -> None:
    deployments = of_kind(rendered, "Deployment")
    assert set(deployments) == {f"fleethub-{s}" for s in SERVICES}
    parser = build_parser()
    for service in SERVICES:
        d = deployments[f"fleethub-{service}"]
        assert d["spec"]["replicas"] == REPLICAS[service], service
        (main_container,) = pod_spec(d)["containers"]
        args = main_container["args"]
        assert args[:2] == ["run", service], service
        parser.parse_args(args)  # a real `fleethub` command line
        for c in pod_spec(d).get("initContainers", []):
            if "args" in c:
                assert c["args"][0] == "migrate" and parser.parse_args(c["args"]).func is not None


def test_service_selectors_match_workload_pods(rendered: list[Obj]) -> None:
    pods = [pod_labels(w) for k in WORKLOADS for w in of_kind(rendered, k).values()]
    for workload in (w for k in WORKLOADS for w in of_kind(rendered, k).values()):
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))
    for name, svc in of_kind(rendered, "Service").items():
        matched = [labels for labels in pods if selects(svc["spec"]["selector"], labels)]
        assert matched, f"Service {name} selects no pods"
        assert len({tuple(sorted(m.items())) for m in matched}) == 1, f"Service {name} selects several workloads"


def test_service_target_ports_and_probe_ports_are_declared_port_names(rendered: list[Obj]) -> None:
    workloads = [w for k in WORKLOADS for w in of_kind(rendered, k).values()]
    for workload in workloads:
        for c in pod_spec(workload)["containers"]:
            names = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, (workload["metadata"]["name"], probe)
                assert c[probe]["httpGet"]["port"] in names, (workload["metadata"]["name"], probe)
    for name, svc in of_kind(rendered, "Service").items():
        (target,) = [w for w in workloads if selects(svc["spec"]["selector"], pod_labels(w))]
        names = {p["name"] for c in pod_spec(target)["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (name, port)


def test_fleethub_probes_use_the_ops_listener(rendered: list[Obj]) -> None:
    for service in SERVICES:
        (c,) = pod_spec(of_kind(rendered, "Deployment")[f"fleethub-{service}"])["containers"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "ops"}
        env = {e["name"]: e.get("value") for e in c["env"]}
        (ops,) = [p for p in c["ports"] if p["name"] == "ops"]
        assert env[f"FLEETHUB_OPS__{service.upper()}__PORT"] == str(ops["containerPort"])
        assert env[f"FLEETHUB_OPS__{service.upper()}__HOST"] == "0.0.0.0"


def _references(workload: Obj) -> list[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret and ConfigMap a pod uses."""
    refs: list[tuple[str, str, str | None]] = []
    for volume in pod_spec(workload).get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [volume])
        for source in sources:
            if "secret" in source:
                s = source["secret"]
                refs += [("Secret", s["secretName"], i["key"]) for i in s.get("items", [])] or [
                    ("Secret", s["secretName"], None)]
            if "configMap" in source:
                m = source["configMap"]
                refs += [("ConfigMap", m["name"], i["key"]) for i in m.get("items", [])] or [
                    ("ConfigMap", m["name"], None)]
    for c in containers(workload):
        for e in c.get("env", []):
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = e.get("valueFrom", {}).get(field)
                if ref:
                    refs.append((kind, ref["name"], ref["key"]))
    return refs


def test_every_secret_and_configmap_used_exists_with_its_keys(everything: list[Obj]) -> None:
    workloads = [w for k in WORKLOADS for w in of_kind(everything, k).values()]
    used = set()
    for workload in workloads:
        for kind, name, key in _references(workload):
            obj = of_kind(everything, kind).get(name)
            assert obj is not None, f"{workload['metadata']['name']} uses {kind} {name}, which nothing makes"
            data = {**obj.get("data", {}), **obj.get("stringData", {})}
            assert key is None or key in data, f"{kind} {name} has no key {key}"
            used.add(name)
    # each service mounts its own seed and no other
    for service in SERVICES:
        seeds = [n for _, n, _ in _references(of_kind(everything, "Deployment")[f"fleethub-{service}"])
                 if n.startswith("fleethub-nats-")]
        assert seeds == [seed_secret_name(service)], service
    unused = {o["metadata"]["name"] for o in everything if o["kind"] in ("Secret", "ConfigMap")} - used
    # for an outside consumer of the events stream, and for an operator's `fleethub status`
    assert unused == {seed_secret_name("events"), seed_secret_name("status")}


def test_pdbs_select_replicated_pods(rendered: list[Obj]) -> None:
    workloads = [w for k in WORKLOADS for w in of_kind(rendered, k).values()]
    covered = set()
    for name, pdb in of_kind(rendered, "PodDisruptionBudget").items():
        (target,) = [w for w in workloads if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(w))]
        replicas, spec = target["spec"]["replicas"], pdb["spec"]
        allowed = replicas - spec["minAvailable"] if "minAvailable" in spec else spec["maxUnavailable"]
        assert 1 <= allowed < replicas, f"{name}: a drain must be able to evict a pod, and never all"
        covered.add(target["metadata"]["name"])
    assert covered == {w["metadata"]["name"] for w in workloads if w["spec"]["replicas"] > 1}


def test_pods_run_as_non_root_with_read_only_root_and_resources(rendered: list[Obj]) -> None:
    for workload in (w for k in WORKLOADS for w in of_kind(rendered, k).values()):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for c in containers(workload):
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False, c["name"]
            assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
            for field in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][field]), (c["name"], field)


def _settings_of(config: Obj, container: Obj, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    toml = tmp_path / "fleethub.toml"
    toml.write_text(config["data"]["fleethub.toml"])
    with monkeypatch.context() as m:
        for e in container["env"]:
            m.setenv(e["name"], e.get("value", "postgresql://u:p@db/fh" if "DATABASE" in e["name"] else "k" * 48))
        return load_settings(toml)


def test_the_configmap_is_valid_settings_for_every_service(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = of_kind(rendered, "ConfigMap")["fleethub-config"]
    for service in SERVICES:
        d = of_kind(rendered, "Deployment")[f"fleethub-{service}"]
        (c,) = pod_spec(d)["containers"]
        assert "--config" in c["args"]
        mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert c["args"][c["args"].index("--config") + 1] == f"{mount['config']}/fleethub.toml"
        settings = _settings_of(config, c, monkeypatch, tmp_path)
        assert settings.nats_nkey_file is not None and settings.nats_nkey_file.parent == Path(mount["nats-seed"])
        assert (settings.database_url is None) == (service == "proxy"), service  # the proxy needs no database
        listen = getattr(settings, service, None)
        if service in ("auth", "api", "proxy"):
            (http,) = [p for p in c["ports"] if p["name"] == "http"]
            assert listen.host == "0.0.0.0" and listen.port == http["containerPort"], service
        if service == "auth":  # the first admin's password file is where the init container copies it
            path = settings.auth.initial_admin_password_file
            assert path is not None and Path(mount["private"]) == path.parent
            (copy,) = [i for i in pod_spec(d)["initContainers"] if i["name"] == "admin-password"]
            assert copy["command"][:3] == ["install", "-m", "0600"] and copy["command"][-1] == str(path)
        if service == "spawner":
            assert settings.data_dir == Path(mount["data"])
    # user servers reach the hub through the proxies' Service
    proxy = of_kind(rendered, "Service")["fleethub-proxy"]
    hub_api = tomllib.loads(config["data"]["fleethub.toml"])["spawner"]["hub_api_url"]
    assert hub_api == f"http://{proxy['metadata']['name']}/hub/api" and proxy["spec"]["ports"][0]["port"] == 80


def test_nats_is_a_three_node_jetstream_cluster_with_the_services_keys(
    rendered: list[Obj], secrets: list[Obj]
) -> None:
    nats = of_kind(rendered, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    headless = of_kind(rendered, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    conf = of_kind(rendered, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    routes = re.findall(r"nats://([\w.-]+):6222", conf)
    assert routes == [f"nats-{i}.{headless['metadata']['name']}" for i in range(3)]
    assert "jetstream" in conf and "server_name: $SERVER_NAME" in conf
    assert f"include ./{AUTH_FILE}" in conf
    auth_conf = of_kind(secrets, "ConfigMap")[AUTHORIZATION_CONFIGMAP]["data"][AUTH_FILE]
    for identity in IDENTITIES:
        seed = of_kind(secrets, "Secret")[seed_secret_name(identity)]["stringData"]["seed"]
        pair = nkeys.from_seed(bytearray(seed.encode()))
        assert f'"{pair.public_key.decode()}"' in auth_conf, identity
    hub = tomllib.loads(of_kind(rendered, "ConfigMap")["fleethub-config"]["data"]["fleethub.toml"])
    assert hub["nats_url"] == f"nats://{'nats'}:4222" and "nats" in of_kind(rendered, "Service")
    assert f"namespace {hub['nats_namespace']!r}" in auth_conf
    assert hub["nats_replicas"] == nats["spec"]["replicas"]  # the hub's streams on every node


def test_kube_secrets_prints_yaml_and_names_a_missing_database_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLEETHUB_DATABASE_URL", raising=False)
    assert main(["kube-secrets"]) == 2
    assert "FLEETHUB_DATABASE_URL" in capsys.readouterr().err
    monkeypatch.setenv("FLEETHUB_DATABASE_URL", "postgresql://fleethub:s3cret@db/fleethub")
    assert main(["kube-secrets", "--k8s-namespace", "hub"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["metadata"]["namespace"] for d in docs} == {"hub"}
    assert of_kind(docs, "Secret")["fleethub-database"]["stringData"]["url"] == "postgresql://fleethub:s3cret@db/fleethub"
    first, second = (manifests(load_settings(database_url="postgresql://x@y/z"), namespace="n") for _ in range(2))
    assert render(first) != render(second)  # new seeds and keys every time
