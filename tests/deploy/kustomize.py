"""Rendering deploy/k8s with Kustomize and looking things up in the result.

`kubectl kustomize` (kubectl ships Kustomize) renders; the standalone `kustomize`
binary is used when kubectl is absent. Neither missing is a skip: it is a failure
naming what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("small", "production", "region-a", "region-b")
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
# Kubernetes expands $(NAME) in env values from variables defined before it.
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def kustomize_command() -> list[str]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    raise RuntimeError(
        "neither kubectl nor kustomize is installed (Debian: apt-get install kubernetes-client)"
    )


def render(path: Path) -> list[dict[str, Any]]:
    """Every object the kustomization at ``path`` renders, in order."""
    result = subprocess.run(
        [*kustomize_command(), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendered overlay."""

    objects: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> Iterator[dict[str, Any]]:
        return (o for o in self.objects if o["kind"] in kinds)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def workloads(self) -> Iterator[dict[str, Any]]:
        return self.of_kind(*WORKLOAD_KINDS)

    def sipmesh_workloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(target, workload) for every workload running `sipmesh serve`."""
        for obj in self.workloads():
            container = pod_spec(obj)["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            target = env.get("SIPMESH_TARGET")
            if target:
                yield str(target), obj

    def data_of(self, kind: str, name: str) -> dict[str, str]:
        obj = self.get(kind, name)
        if obj is None:
            raise KeyError(f"{kind}/{name} not rendered")
        if kind == "Secret":
            import base64

            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            data.update(obj.get("stringData", {}))
            return data
        return dict(obj.get("data", {}))

    def container_env(self, workload: dict[str, Any]) -> dict[str, str]:
        """The environment the first container sees: envFrom, then env with $(VAR)."""
        container = pod_spec(workload)["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.data_of("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(self.data_of("Secret", source["secretRef"]["name"]))
        for item in container.get("env", []):
            if "value" in item:
                value = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), item["value"])
            else:
                # Downward API values exist only in a pod; stand in with a marker.
                value = f"<{item['valueFrom']['fieldRef']['fieldPath']}>"
            env[item["name"]] = value
        return env


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
