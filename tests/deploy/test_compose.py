"""docker-compose.yml: valid compose, and the topology sipmesh needs.

No container engine runs here, so `docker compose config` cannot be asked; the file
is validated against the compose-spec JSON schema vendored in tests/deploy/data/
(source in its README), and then checked for what the schema cannot know: every
target has a service, configuration comes from the environment only and is a valid
sipmesh configuration, health checks exist, start-up waits on health.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest

from sipmesh.runtime.config import TARGETS, describe_settings, load_config, split_hostport
from tests.cluster.compose import (
    COMPOSE_FILE,
    ComposeService,
    interpolate,
    load_raw,
    load_services,
    start_order,
)

DATA = Path(__file__).parent / "data"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
BACKENDS = {"SIPMESH_DB": "postgres", "SIPMESH_STATE": "redis", "SIPMESH_BUS": "nats"}
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")


@pytest.fixture(scope="module")
def services() -> dict[str, ComposeService]:
    return load_services()


def sipmesh_servers(services: dict[str, ComposeService]) -> list[ComposeService]:
    return [s for s in services.values() if s.is_server]


def test_vendored_schema_is_the_published_one() -> None:
    digest = hashlib.sha256((DATA / "compose-spec.json").read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_raw()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validation above is not vacuous: a typo'd key and a bad condition fail."""
    schema = json.loads((DATA / "compose-spec.json").read_text())
    broken = load_raw()
    broken["services"]["router"]["depends_on"]["registrar"]["condition"] = "healthy"
    broken["services"]["edge-1"]["helthcheck"] = {}
    messages = [e.message for e in jsonschema.Draft201909Validator(schema).iter_errors(broken)]
    assert len(messages) >= 2


def test_durations_are_compose_durations(services: dict[str, ComposeService]) -> None:
    for service in services.values():
        values = [service.raw.get("stop_grace_period")]
        values += [(service.healthcheck or {}).get(k) for k in ("interval", "timeout")]
        values += [(service.healthcheck or {}).get("start_period")]
        for value in values:
            assert value is None or _DURATION.match(str(value)), (service.name, value)


def test_every_target_has_a_service_and_edges_are_two(
    services: dict[str, ComposeService],
) -> None:
    by_target: dict[str, list[str]] = {}
    for service in sipmesh_servers(services):
        assert service.target, f"{service.name} sets no SIPMESH_TARGET"
        by_target.setdefault(service.target, []).append(service.name)
    assert set(by_target) == set(TARGETS)
    assert len(by_target["edge"]) == 2
    assert services["router"].replicas == 2


def test_configuration_is_environment_only_and_valid(
    services: dict[str, ComposeService],
) -> None:
    known = {env for _, _, env, _ in describe_settings()}
    for service in sipmesh_servers(services):
        # No config file, no flags, no mounted configuration: the environment is all.
        assert service.command == ("serve",), service.name
        for key in ("volumes", "configs", "secrets", "env_file", "entrypoint"):
            assert key not in service.raw, f"{service.name} uses {key}"
        unknown = {k for k in service.environment if k.startswith("SIPMESH_")} - known
        assert not unknown, f"{service.name}: not sipmesh settings: {unknown}"
        config = load_config(env=dict(service.environment))
        assert config.targets() == (service.target,)
        for key, host in BACKENDS.items():
            assert (
                f"@{host}:" in service.environment[key]
                or f"//{host}:" in (service.environment[key])
            ), (service.name, key)
        # Listening on every interface of the container, on the ports the probes use.
        assert config.http == "0.0.0.0:9090"
        assert config.grpc == "0.0.0.0:50051"


def test_defaults_interpolate_to_a_working_configuration() -> None:
    public = load_services(env={"SIPMESH_PUBLIC_HOST": "203.0.113.7"})
    assert public["edge-1"].environment["SIPMESH_EDGE__ADVERTISE"] == "203.0.113.7"
    assert interpolate("a$${B}${C:-d}", {}) == "a${B}d"


def test_endpoints_name_services_that_run_that_target(
    services: dict[str, ComposeService],
) -> None:
    names: dict[str, set[str]] = {}
    for service in sipmesh_servers(services):
        for host in (service.name, *service.aliases):
            names.setdefault(host, set()).add(str(service.target))
    for service in sipmesh_servers(services):
        for key, value in service.environment.items():
            if not key.startswith("SIPMESH_ENDPOINTS__"):
                continue
            wanted = key.removeprefix("SIPMESH_ENDPOINTS__").lower().replace("_", "-")
            for entry in value.removeprefix("dns:///").split(","):
                host, port = split_hostport(entry)
                assert names.get(host) == {wanted}, (service.name, key, entry)
                assert port == 50051


def test_health_checks_probe_ready(services: dict[str, ComposeService]) -> None:
    for service in services.values():
        if service.command[:1] == ("db",):
            continue  # one-shot job: it completes, it is never "healthy"
        check = service.healthcheck
        assert check, f"{service.name} has no health check"
        assert not check.get("disable"), f"{service.name} disables its health check"
        if service.is_sipmesh:
            test = " ".join(check["test"])
            port = split_hostport(service.environment["SIPMESH_HTTP"])[1]
            assert f"127.0.0.1:{port}/ready" in test, service.name


def test_start_up_waits_on_health(services: dict[str, ComposeService]) -> None:
    order = start_order(services)
    db_init = services["db-init"]
    assert db_init.command == ("db", "init")
    assert db_init.depends_on == {"postgres": "service_healthy"}
    assert db_init.raw.get("restart") == "no"
    for service in sipmesh_servers(services):
        deps = service.depends_on
        assert deps.get("db-init") == "service_completed_successfully", service.name
        assert deps.get("redis") == deps.get("nats") == "service_healthy", service.name
        for dep, condition in deps.items():
            assert condition != "service_started", f"{service.name} -> {dep} waits on nothing"
            if condition == "service_healthy":
                assert services[dep].healthcheck, f"{dep} cannot become healthy"
            assert order.index(dep) < order.index(service.name)
    for edge in ("edge-1", "edge-2"):
        assert services[edge].depends_on["router"] == "service_healthy"
    assert services["router"].depends_on["registrar"] == "service_healthy"


def test_edges_publish_the_port_they_listen_on(services: dict[str, ComposeService]) -> None:
    published: set[str] = set()
    for service in sipmesh_servers(services):
        if service.target != "edge":
            continue
        env = service.environment
        assert env["SIPMESH_EDGE__ADVERTISE"], service.name
        assert env["SIPMESH_GRPC_ADVERTISE"] == f"{service.name}:50051"
        assert "edge" in service.aliases
        for listener in env["SIPMESH_LISTEN"].split(","):
            proto, _, port = listener.split(":")
            mapping = f"{port}:{port}/{proto}"
            assert mapping in service.ports, (service.name, mapping)
            assert mapping not in published, f"{mapping} published twice"
            published.add(mapping)


def test_media_relay_publishes_its_rtp_range(services: dict[str, ComposeService]) -> None:
    relay = services["media-relay"]
    low = relay.environment["SIPMESH_MEDIA_RELAY__PORT_MIN"]
    high = relay.environment["SIPMESH_MEDIA_RELAY__PORT_MAX"]
    assert f"{low}-{high}:{low}-{high}/udp" in relay.ports


def test_one_image_for_every_sipmesh_service(services: dict[str, ComposeService]) -> None:
    sipmesh = [s for s in services.values() if s.is_sipmesh]
    assert len({s.image for s in sipmesh}) == 1
    for service in sipmesh:
        assert service.raw["build"]["context"] == "."
    assert (COMPOSE_FILE.parent / "Dockerfile").is_file()
