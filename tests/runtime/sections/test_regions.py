"""The regions section and the namespace setting (environment → config → prefixes)."""

from __future__ import annotations

import pytest

from sipmesh.runtime.backends import key_prefix, subject_prefix
from sipmesh.runtime.config import ConfigError, load_config


def test_defaults_are_one_region_in_the_sipmesh_namespace() -> None:
    config = load_config(env={})
    assert config.namespace == "sipmesh"
    assert key_prefix(config) == "sipmesh:"
    # Event subjects already start with "sipmesh." (events.proto): no extra prefix.
    assert subject_prefix(config) == ""
    assert not config.regions.replicate
    assert config.regions.name == ""
    assert config.regions.subject == "sipmesh-regions"


def test_regions_from_the_environment() -> None:
    config = load_config(
        env={
            "SIPMESH_NAMESPACE": "sipmesh_a",
            "SIPMESH_REGIONS__NAME": "eu-west",
            "SIPMESH_REGIONS__REPLICATE": "true",
            "SIPMESH_REGIONS__ADDRESS": "sip-a.example.net:5060",
            "SIPMESH_REGIONS__PEERS": "us-east, ap-south",
        }
    )
    assert key_prefix(config) == "sipmesh_a:"
    assert subject_prefix(config) == "sipmesh_a"
    regions = config.regions
    assert (regions.name, regions.replicate) == ("eu-west", True)
    assert regions.peers == ["us-east", "ap-south"]
    assert regions.sip_address() == "sip:sip-a.example.net:5060"


def test_sip_uri_address_is_kept() -> None:
    config = load_config(env={"SIPMESH_REGIONS__ADDRESS": "sips:sip-b.example.net"})
    assert config.regions.sip_address() == "sips:sip-b.example.net"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("SIPMESH_NAMESPACE", "a.b", "namespace"),
        ("SIPMESH_NAMESPACE", "", "namespace"),
        ("SIPMESH_REGIONS__NAME", "a b", "regions.name"),
        ("SIPMESH_REGIONS__PEERS", "ok,no.dots", "regions.peers"),
        ("SIPMESH_REGIONS__SUBJECT", "bad..subject", "regions.subject"),
    ],
)
def test_bad_values_name_their_key(key: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(env={key: value})
