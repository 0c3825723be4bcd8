"""deploy/k8s: every overlay renders, every object is valid Kubernetes, and the
platform's invariants hold (every target deployed, probes on the real endpoints,
autoscalers and disruption budgets point at real workloads, gRPC peers found through
headless Services, configuration changes roll pods, the regions differ where they
must and only there)."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sipmesh.runtime.config import TARGETS, describe_settings, load_config, split_hostport
from tests.deploy.kustomize import (
    K8S,
    OVERLAYS,
    Rendered,
    pod_labels,
    pod_spec,
    render,
    selects,
)

# The oldest Kubernetes the manifests promise (mixed-protocol LoadBalancer: 1.26,
# topologySpreadConstraints.matchLabelKeys: 1.27+) and the newest schema known.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
AUTOSCALED = ("edge", "router", "registrar", "presence")
HASHED = re.compile(r"^(?P<base>.+)-[a-z0-9]{10}$")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    name = str(request.param)
    return name, Rendered(render(K8S / "overlays" / name))


@pytest.fixture(scope="module")
def rendered_all() -> dict[str, Rendered]:
    return {name: Rendered(render(K8S / "overlays" / name)) for name in OVERLAYS}


def _rel(path: Path, start: Path) -> str:
    # Kustomize takes only relative paths to other kustomizations.
    return os.path.relpath(path, start)


def _hostnetwork_overlay(tmp_path: Path) -> Rendered:
    """The base with the edge-hostnetwork component, as an operator would add it."""
    (tmp_path / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {_rel(K8S / "base", tmp_path)}
            components:
              - {_rel(K8S / "components" / "edge-hostnetwork", tmp_path)}
            """
        )
    )
    return Rendered(render(tmp_path))


def test_every_object_is_valid_kubernetes(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    assert rendered.objects
    for obj in rendered.objects:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} ({version}): {exc}")


def test_validation_is_not_vacuous(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    deployment = next(rendered.of_kind("Deployment"))
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_every_target_is_deployed_once(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    targets = [target for target, _ in rendered.sipmesh_workloads()]
    assert sorted(targets) == sorted(TARGETS)


def test_configuration_is_valid_and_environment_only(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    known = {env for _, _, env, _ in describe_settings()}
    for target, workload in rendered.sipmesh_workloads():
        container = pod_spec(workload)["containers"][0]
        assert container["args"] == ["serve"], target
        assert "command" not in container, target
        env = rendered.container_env(workload)
        unknown = {k for k in env if k.startswith("SIPMESH_")} - known
        assert not unknown, f"{target}: not sipmesh settings: {unknown}"
        config = load_config(env=env)
        assert config.targets() == (target,)
        assert config.state.startswith("redis://")
        assert config.db.startswith("postgresql://")
        assert config.bus.startswith("nats://")
        assert env["SIPMESH_INSTANCE_ID"] == f"{env['REGION']}-<metadata.name>"
        assert env["SIPMESH_GRPC_ADVERTISE"].startswith("<status.podIP>:")


def _port(container: dict[str, Any], name: str) -> int:
    for port in container["ports"]:
        if port["name"] == name:
            return int(port["containerPort"])
    raise AssertionError(f"no port named {name}")


def test_probes_hit_the_real_endpoints(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for target, workload in rendered.sipmesh_workloads():
        container = pod_spec(workload)["containers"][0]
        config = load_config(env=rendered.container_env(workload))
        http_port = split_hostport(config.http)[1]
        grpc_port = split_hostport(config.grpc)[1]
        assert _port(container, "http") == http_port, target
        assert _port(container, "grpc") == grpc_port, target
        assert split_hostport(config.http)[0] == "0.0.0.0"
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, "http"), (target, probe)
        grace = config.grace_period
        assert pod_spec(workload)["terminationGracePeriodSeconds"] > grace, target


def test_pods_run_as_non_root(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for target, workload in rendered.sipmesh_workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, target
        assert spec["securityContext"]["runAsUser"] != 0, target
        assert spec["automountServiceAccountToken"] is False, target
        context = spec["containers"][0]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, target
        assert context["readOnlyRootFilesystem"] is True, target
        assert context["capabilities"]["drop"] == ["ALL"], target
        resources = spec["containers"][0]["resources"]
        assert resources["requests"]["cpu"], target
        assert resources["limits"]["memory"], target


def test_autoscalers_target_existing_workloads(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    scaled = set()
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        workload = rendered.get(ref["kind"], ref["name"])
        assert workload is not None, f"HPA {hpa['metadata']['name']} scales nothing"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # The HPA owns the count: a replicas field would fight it on every apply.
        assert "replicas" not in workload["spec"], ref["name"]
        scaled.add(ref["name"])
    assert scaled == set(AUTOSCALED)


def test_disruption_budgets_select_one_workload(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    covered = set()
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [w for w in rendered.workloads() if selects(selector, pod_labels(w))]
        assert len(matched) == 1, f"PDB {pdb['metadata']['name']} matches {len(matched)}"
        covered.add(matched[0]["metadata"]["name"])
    assert covered == {w["metadata"]["name"] for _, w in rendered.sipmesh_workloads()}


def test_grpc_endpoints_are_headless_services_of_that_target(
    overlay: tuple[str, Rendered],
) -> None:
    _, rendered = overlay
    runs = dict(rendered.sipmesh_workloads())
    for target, workload in runs.items():
        env = rendered.container_env(workload)
        for key, value in env.items():
            if not key.startswith("SIPMESH_ENDPOINTS__"):
                continue
            wanted = key.removeprefix("SIPMESH_ENDPOINTS__").lower().replace("_", "-")
            assert value.startswith("dns:///"), (target, key)
            host, port = split_hostport(value.removeprefix("dns:///"))
            service = rendered.get("Service", host)
            assert service is not None, f"{key} names no Service {host}"
            assert service["spec"]["clusterIP"] == "None", f"{host} is not headless"
            assert selects(service["spec"]["selector"], pod_labels(runs[wanted]))
            (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
            container = pod_spec(runs[wanted])["containers"][0]
            peer_grpc = load_config(env=rendered.container_env(runs[wanted])).grpc
            assert _port(container, svc_port["targetPort"]) == split_hostport(peer_grpc)[1]


def test_configuration_objects_carry_a_content_hash(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    names = {o["metadata"]["name"] for o in rendered.of_kind("ConfigMap", "Secret")}
    for name in names:
        assert HASHED.match(name), f"{name} has no hash suffix: changes would not roll pods"
    for target, workload in rendered.sipmesh_workloads():
        refs = [
            next(iter(source.values()))["name"]
            for source in pod_spec(workload)["containers"][0]["envFrom"]
        ]
        bases = {m.group("base") for m in map(HASHED.match, refs) if m is not None}
        assert bases == {
            "sipmesh-config",
            "sipmesh-topology",
            "sipmesh-backends",
        }, target
        assert set(refs) <= names, target


def test_a_configuration_change_rolls_every_pod(tmp_path: Path) -> None:
    before = Rendered(render(K8S / "overlays" / "small"))
    (tmp_path / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {_rel(K8S / "overlays" / "small", tmp_path)}
            configMapGenerator:
              - name: sipmesh-config
                namespace: sipmesh
                behavior: merge
                literals:
                  - SIPMESH_EDGE__MAX_FORWARDS=40
            """
        )
    )
    after = Rendered(render(tmp_path))
    for target, workload in before.sipmesh_workloads():
        changed = after.get(workload["kind"], workload["metadata"]["name"])
        assert changed is not None
        assert changed["spec"]["template"] != workload["spec"]["template"], target
        assert after.container_env(changed)["SIPMESH_EDGE__MAX_FORWARDS"] == "40"


def test_edge_is_exposed_for_sip_with_a_configurable_address(
    rendered_all: dict[str, Rendered],
) -> None:
    advertised = set()
    for name, rendered in rendered_all.items():
        service = rendered.get("Service", "edge-sip")
        assert service is not None, name
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["externalTrafficPolicy"] == "Local"
        assert {(p["protocol"], p["port"]) for p in service["spec"]["ports"]} == {
            ("UDP", 5060),
            ("TCP", 5060),
        }
        edge = rendered.get("Deployment", "edge")
        assert edge is not None
        env = rendered.container_env(edge)
        listens = load_config(env=env).listen
        assert listens == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
        advertised.add(env["SIPMESH_EDGE__ADVERTISE"])
    assert len(advertised) == len(rendered_all)  # every overlay sets its own address


def test_media_relay_uses_the_node_network(rendered_all: dict[str, Rendered]) -> None:
    for rendered in rendered_all.values():
        relay = rendered.get("Deployment", "media-relay")
        assert relay is not None
        assert pod_spec(relay)["hostNetwork"] is True
        assert pod_spec(relay)["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_region_overlays_differ_in_region_settings_only(
    rendered_all: dict[str, Rendered],
) -> None:
    a, b = rendered_all["region-a"], rendered_all["region-b"]

    def shape(rendered: Rendered) -> set[tuple[str, str]]:
        out = set()
        for obj in rendered.objects:
            match = HASHED.match(obj["metadata"]["name"])
            name = match.group("base") if match else obj["metadata"]["name"]
            out.add((obj["kind"], name))
        return out

    assert shape(a) == shape(b)
    env_a = a.container_env(a.get("Deployment", "router") or {})
    env_b = b.container_env(b.get("Deployment", "router") or {})
    differ = {k for k in env_a.keys() | env_b.keys() if env_a.get(k) != env_b.get(k)}
    assert differ == {
        "REGION",
        "SIPMESH_EDGE__ADVERTISE",
        "SIPMESH_ROUTER__ALIASES",
        "SIPMESH_BUS",
        "SIPMESH_INSTANCE_ID",
        "SIPMESH_REGIONS__NAME",
        "SIPMESH_REGIONS__ADDRESS",
    }
    # Both regions replicate registrations to each other (docs/deployment.md).
    assert env_a["SIPMESH_REGIONS__REPLICATE"] == env_b["SIPMESH_REGIONS__REPLICATE"] == "true"
    for rendered, region in ((a, "region-a"), (b, "region-b")):
        for _, workload in rendered.sipmesh_workloads():
            assert pod_labels(workload)["topology.sipmesh.io/region"] == region


def test_edge_hostnetwork_component(tmp_path: Path) -> None:
    rendered = _hostnetwork_overlay(tmp_path)
    assert rendered.get("Deployment", "edge") is None
    assert rendered.get("Service", "edge-sip") is None
    assert rendered.get("HorizontalPodAutoscaler", "edge") is None
    daemonset = rendered.get("DaemonSet", "edge")
    assert daemonset is not None
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(daemonset, version, strict=True)
    spec = pod_spec(daemonset)
    assert spec["hostNetwork"] is True
    assert spec["nodeSelector"] == {"sipmesh.io/edge": "true"}
    env = rendered.container_env(daemonset)
    assert env["SIPMESH_EDGE__ADVERTISE"] == "<status.hostIP>"
    assert load_config(env=env).targets() == ("edge",)
    # The relay also uses the node's network: their ports must not collide.
    relay = rendered.get("Deployment", "media-relay")
    assert relay is not None
    relay_env = rendered.container_env(relay)
    relay_ports = {split_hostport(relay_env[k])[1] for k in ("SIPMESH_HTTP", "SIPMESH_GRPC")}
    edge_ports = {split_hostport(env[k])[1] for k in ("SIPMESH_HTTP", "SIPMESH_GRPC")}
    assert not relay_ports & (edge_ports | {5060})
    assert sorted(t for t, _ in rendered.sipmesh_workloads()) == sorted(TARGETS)
