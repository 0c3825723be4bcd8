"""The one typed configuration tree and how it is loaded.

Precedence, lowest first: built-in defaults ← YAML file (``--config``) ← environment
(``SIPMESH_…``) ← command-line flags. Every key has an environment variable: the
path upper-cased, joined by ``__`` below the top level (``state`` → ``SIPMESH_STATE``,
``edge.router_timeout`` → ``SIPMESH_EDGE__ROUTER_TIMEOUT``); lists are comma-separated.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from sipmesh.runtime.sections import (
    AccountingConfig,
    AdminConfig,
    EdgeConfig,
    MediaRelayConfig,
    PresenceConfig,
    RegistrarConfig,
    RouterConfig,
    TelemetryConfig,
)
from sipmesh.runtime.sections.base import Section

# --- regions (issue 12, multi-region): the namespace setting and the regions section ---
from sipmesh.runtime.sections.regions import RegionsConfig

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# --- end regions ---

ENV_PREFIX = "SIPMESH_"

TARGETS = ("edge", "router", "registrar", "presence", "accounting", "media-relay", "admin")

_LISTEN_RE = re.compile(r"^(udp|tcp|tls|ws|wss|sctp):(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$")
_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):(\d{1,5})$")


class ConfigError(Exception):
    """A configuration value that cannot be used; the message names the key."""


class EndpointsConfig(Section):
    """Where the services that do not run in this process are found (split mode).

    Each is a gRPC target: ``host:port``, a comma-separated list of them, or
    ``dns:///name:port`` (every address the name resolves to is used, so several
    instances share the load).
    """

    router: str = Field("", description="router instances, when router is not a local target")
    registrar: str = Field("", description="registrar instances")
    presence: str = Field("", description="presence instances")
    media_relay: str = Field("", description="media-relay instances")
    edge: str = Field("", description="edge instances (for requests sent through their flows)")


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SipmeshConfig(Section):
    target: list[str] = Field(["all"], description="services run by this process, or all")
    instance_id: str = Field(
        default_factory=_default_instance_id,
        description="this process's name in Via branches, events and the admin API",
    )
    listen: list[str] = Field(
        ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"],
        description="SIP listeners PROTO:HOST:PORT (udp, tcp, tls, ws, wss, sctp)",
    )
    domains: list[str] = Field(
        ["localhost"], description="SIP domains served here (more come from the domain table)"
    )
    state: str = Field("memory", description="shared live state: memory or redis://…")
    db: str = Field(
        "sqlite:///sipmesh.sqlite", description="tables: sqlite:///path or postgresql://…"
    )
    bus: str = Field("memory", description="event bus: memory or nats://…")
    event_retention: float = Field(
        7 * 86400.0,
        gt=0,
        description="seconds a JetStream event stream keeps events (max_age), "
        "for a consumer such as accounting that is down",
    )
    event_retention_messages: int = Field(
        100_000,
        ge=1,
        description="events an in-process (bus: memory) stream keeps at most "
        "for a consumer that is behind or down",
    )
    http: str = Field("127.0.0.1:9090", description="/ready, /live and /metrics")
    grpc: str = Field("127.0.0.1:50051", description="inter-service gRPC API")
    grpc_advertise: str = Field(
        "", description="address other processes use for this gRPC API; empty: derived from grpc"
    )
    admin: str = Field("127.0.0.1:8080", description="admin API and web console")
    grace_period: float = Field(10.0, ge=0, description="seconds to drain on SIGTERM/SIGINT")
    gc_threshold: int = Field(
        20_000,
        ge=0,
        description="allocations between young-generation garbage collections "
        "(Python's default 700; 0 keeps it); objects built at start-up are frozen",
    )
    # --- regions (issue 12): key/subject namespace and the multi-region section ---
    namespace: str = Field(
        "sipmesh",
        description="prefix of every Redis key (NAMESPACE:) and NATS subject (NAMESPACE.); "
        "installations or regions sharing a server use different ones",
    )
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    # --- end regions ---
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    registrar: RegistrarConfig = Field(default_factory=RegistrarConfig)
    presence: PresenceConfig = Field(default_factory=PresenceConfig)
    accounting: AccountingConfig = Field(default_factory=AccountingConfig)
    media_relay: MediaRelayConfig = Field(default_factory=MediaRelayConfig)
    admin_api: AdminConfig = Field(default_factory=AdminConfig)

    @field_validator("target")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        names = [v.strip() for item in value for v in item.split(",") if v.strip()]
        if not names:
            raise ValueError("no target given")
        for name in names:
            if name != "all" and name not in TARGETS:
                raise ValueError(f"unknown target {name!r} (known: all, {', '.join(TARGETS)})")
        return names

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError(f"{value!r}: a namespace is letters, digits, '-' and '_'")
        return value

    @field_validator("listen")
    @classmethod
    def _listeners(cls, value: list[str]) -> list[str]:
        for item in value:
            match = _LISTEN_RE.match(item)
            if not match or not 0 <= int(match.group(3)) < 65536:  # 0: any free port
                raise ValueError(f"{item!r} is not PROTO:HOST:PORT (e.g. udp:0.0.0.0:5060)")
        return value

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{mask_url(value)!r} is neither 'memory' nor a redis:// URL")
        return value

    @field_validator("db")
    @classmethod
    def _db(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"{mask_url(value)!r} is neither sqlite:///path nor postgresql://…")
        return value

    @field_validator("bus")
    @classmethod
    def _bus(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("nats://", "tls://")):
            raise ValueError(f"{mask_url(value)!r} is neither 'memory' nor a nats:// URL")
        return value

    @field_validator("http", "grpc", "admin")
    @classmethod
    def _hostport(cls, value: str) -> str:
        match = _HOSTPORT_RE.match(value)
        if not match or not 0 <= int(match.group(2)) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value

    def targets(self) -> tuple[str, ...]:
        """The targets run here, with ``all`` expanded, in the canonical order."""
        if "all" in self.target:
            return TARGETS
        return tuple(t for t in TARGETS if t in self.target)


def mask_url(url: str) -> str:
    """Hide the password of a URL (``postgresql://u:secret@h`` → ``postgresql://u:***@h``)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def split_hostport(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port) without brackets."""
    match = _HOSTPORT_RE.match(value)
    if not match:
        raise ConfigError(f"{value!r} is not HOST:PORT")
    return match.group(1).strip("[]") or "0.0.0.0", int(match.group(2))


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(
        get_origin(a) is list for a in get_args(annotation)
    )


def _env_layer(
    model: type[BaseModel], env: Mapping[str, str], path: tuple[str, ...]
) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = (*path, name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = _env_layer(annotation, env, sub)
            if nested:
                layer[name] = nested
            continue
        raw = env.get(env_name(sub))
        if raw is None:
            continue
        layer[name] = (
            [v.strip() for v in raw.split(",") if v.strip()] if _is_list(annotation) else raw
        )
    return layer


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _yaml_layer(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys")
    # YAML keys may use '-' like the flags (media-relay) or '_' like the model.
    return _normalise_keys(loaded)


def _normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {
        str(k).replace("-", "_"): _normalise_keys(v) if isinstance(v, dict) else v
        for k, v in data.items()
    }


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    path = tuple(str(p) for p in first["loc"] if not isinstance(p, int))
    message = first["msg"].removeprefix("Value error, ")
    key = ".".join(path) or "config"
    return f"{key}: {message} (environment variable {env_name(path)})"


def load_config(
    file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SipmeshConfig:
    """Build the effective configuration; raises ConfigError naming the bad key."""
    environ = os.environ if env is None else env
    data: dict[str, Any] = {}
    config_file = file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        data = _merge(data, _yaml_layer(Path(config_file)))
    data = _merge(data, _env_layer(SipmeshConfig, environ, ()))
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return SipmeshConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def effective_config(config: SipmeshConfig) -> dict[str, Any]:
    """The configuration as plain data with secrets masked (``sipmesh config show``)."""
    data = config.model_dump(mode="json")
    for key in ("state", "db", "bus"):
        data[key] = mask_url(data[key])
    return data


def describe_settings() -> list[tuple[str, str, str, str]]:
    """(key, default, environment variable, description) for every setting (docs)."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            sub = (*path, name)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, sub)
                continue
            if field.default_factory is not None:
                default = "(per process)" if name == "instance_id" else ""
            else:
                value = field.default
                default = ",".join(value) if isinstance(value, list) else str(value)
                if hasattr(value, "get_secret_value"):
                    default = ""
            rows.append((".".join(sub), default, env_name(sub), field.description or ""))

    walk(SipmeshConfig, ())
    return rows
