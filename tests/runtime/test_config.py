"""Configuration: defaults ← YAML ← environment ← flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipmesh.runtime.config import (
    ConfigError,
    describe_settings,
    effective_config,
    env_name,
    load_config,
    mask_url,
)


def test_defaults_are_the_embedded_setup() -> None:
    config = load_config(env={})
    assert config.state == "memory"
    assert config.bus == "memory"
    assert config.db.startswith("sqlite:///")
    assert config.listen == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert config.admin.startswith("127.0.0.1:")
    assert config.targets() == (
        "edge",
        "router",
        "registrar",
        "presence",
        "accounting",
        "media-relay",
        "admin",
    )


def test_precedence_yaml_then_env_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "sipmesh.yaml"
    file.write_text(
        "state: redis://yaml:6379/0\n"
        "bus: nats://yaml:4222\n"
        "edge:\n  router_timeout: 4\n"
        "media-relay:\n  port_min: 31000\n"
    )
    env = {"SIPMESH_BUS": "nats://env:4222", "SIPMESH_EDGE__ROUTER_TIMEOUT": "5"}
    config = load_config(file, env=env, overrides={"bus": "nats://flag:4222", "state": None})
    assert config.state == "redis://yaml:6379/0"  # YAML, nothing above it
    assert config.bus == "nats://flag:4222"  # flag beats env beats YAML
    assert config.edge.router_timeout == 5.0  # env beats YAML
    assert config.media_relay.port_min == 31000  # '-' in YAML keys is accepted


def test_lists_from_environment_are_comma_separated() -> None:
    config = load_config(
        env={
            "SIPMESH_LISTEN": "udp:[::1]:5070, tls:127.0.0.1:5071",
            "SIPMESH_TARGET": "edge,router",
        }
    )
    assert config.listen == ["udp:[::1]:5070", "tls:127.0.0.1:5071"]
    assert config.targets() == ("edge", "router")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SIPMESH_TARGET": "nosuch"}, "target: unknown target 'nosuch'"),
        ({"SIPMESH_STATE": "mongodb://x"}, "state:"),
        ({"SIPMESH_DB": "mysql://u:pw@h/db"}, "db:"),
        ({"SIPMESH_BUS": "kafka://x"}, "bus:"),
        ({"SIPMESH_LISTEN": "udp:0.0.0.0"}, "listen:"),
        ({"SIPMESH_HTTP": "nohost"}, "http:"),
        ({"SIPMESH_EDGE__ROUTER_TIMEOUT": "soon"}, "edge.router_timeout:"),
        ({"SIPMESH_REGISTRAR__MIN_EXPIRES": "-1"}, "registrar.min_expires:"),
    ],
)
def test_bad_values_name_the_key_and_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    message = str(info.value)
    assert message.startswith(key)
    assert "\n" not in message
    assert "environment variable SIPMESH_" in message
    assert "pw" not in message  # a password in a bad URL is never echoed


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("edge:\n  max_mesage_size: 10\n")
    with pytest.raises(ConfigError, match=r"edge\.max_mesage_size"):
        load_config(file, env={})


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("state: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, env={})


def test_effective_config_masks_secrets() -> None:
    config = load_config(
        env={
            "SIPMESH_DB": "postgresql://sip:hunter2@db/sipmesh",
            "SIPMESH_ADMIN_API__WRITE_TOKEN": "s3cret",
        }
    )
    shown = effective_config(config)
    assert "hunter2" not in str(shown)
    assert "s3cret" not in str(shown)
    assert shown["db"] == "postgresql://sip:***@db/sipmesh"
    assert config.admin_api.write_token.get_secret_value() == "s3cret"


def test_every_setting_has_an_environment_variable_and_description() -> None:
    rows = describe_settings()
    keys = {row[0] for row in rows}
    assert {"state", "db", "bus", "listen", "edge.router_timeout"} <= keys
    for key, _default, env, description in rows:
        assert env == env_name(tuple(key.split(".")))
        assert description, key


def test_mask_url() -> None:
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("nats://h:4222") == "nats://h:4222"


def test_configuration_doc_lists_every_setting() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for key, _default, env, _description in describe_settings():
        assert f"`{key}`" in doc, key
        assert f"`{env}`" in doc, env
