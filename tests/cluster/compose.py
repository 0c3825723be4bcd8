"""Reading docker-compose.yml the way ``docker compose`` does, for tests and the harness.

Only what sipmesh's compose file uses: YAML merge keys (PyYAML's safe loader resolves
them), ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}`` and
``$$`` interpolation (compose-spec "Interpolation"), list or mapping forms of
``environment`` and ``depends_on``, ``deploy.replicas`` and network aliases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(Exception):
    """The compose file uses something this reader (or compose) cannot resolve."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables as compose does (an unset variable without default is "")."""

    def sub(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise ComposeError(f"variable {name} is required: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def _env_mapping(raw: Any) -> dict[str, str | None]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        out: dict[str, str | None] = {}
        for item in raw:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {str(k): None if v is None else str(v) for k, v in dict(raw).items()}


def _depends(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {str(name): "service_started" for name in raw}
    return {str(k): str(dict(v).get("condition", "service_started")) for k, v in raw.items()}


@dataclass(frozen=True)
class ComposeService:
    """One service of the compose file, interpolated."""

    name: str
    raw: Mapping[str, Any]
    image: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    depends_on: Mapping[str, str]
    replicas: int
    aliases: tuple[str, ...]
    ports: tuple[str, ...]
    healthcheck: Mapping[str, Any] | None = field(default=None)

    @property
    def is_sipmesh(self) -> bool:
        """Built from this repository's Dockerfile (the one sipmesh image)."""
        return "build" in self.raw

    @property
    def target(self) -> str | None:
        return self.environment.get("SIPMESH_TARGET")

    @property
    def is_server(self) -> bool:
        """A long-running `sipmesh serve` (not a one-shot job)."""
        return self.is_sipmesh and self.command[:1] == ("serve",)


def load_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The file as compose's schema validation sees it: YAML with merge keys resolved."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ComposeError(f"{path}: not a mapping")
    return data


def _interpolate_tree(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_interpolate_tree(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, env) for k, v in value.items()}
    return value


def load_services(
    path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None
) -> dict[str, ComposeService]:
    """Every service of the file, interpolated against ``env`` (default: empty)."""
    data = _interpolate_tree(load_raw(path), env or {})
    services: dict[str, ComposeService] = {}
    for name, raw in (data.get("services") or {}).items():
        environment = {
            k: (v if v is not None else (env or {}).get(k, ""))
            for k, v in _env_mapping(raw.get("environment")).items()
        }
        command = raw.get("command") or ()
        if isinstance(command, str):
            command = command.split()
        aliases: list[str] = []
        networks = raw.get("networks")
        if isinstance(networks, dict):
            for net in networks.values():
                aliases += list((net or {}).get("aliases") or [])
        health = raw.get("healthcheck")
        services[name] = ComposeService(
            name=name,
            raw=raw,
            image=str(raw.get("image", "")),
            command=tuple(str(c) for c in command),
            environment=environment,
            depends_on=_depends(raw.get("depends_on")),
            replicas=int((raw.get("deploy") or {}).get("replicas", 1)),
            aliases=tuple(aliases),
            ports=tuple(str(p) for p in raw.get("ports") or ()),
            healthcheck=health if isinstance(health, dict) else None,
        )
    return services


def start_order(services: Mapping[str, ComposeService]) -> list[str]:
    """Service names with every dependency before its dependents (raises on a cycle)."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ComposeError(f"depends_on cycle: {' -> '.join((*trail, name))}")
        if name not in services:
            raise ComposeError(f"{trail[-1]} depends on unknown service {name}")
        state[name] = "visiting"
        for dep in services[name].depends_on:
            visit(dep, (*trail, name))
        state[name] = "done"
        order.append(name)

    for name in services:
        visit(name, ())
    return order
