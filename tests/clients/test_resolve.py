"""Target parsing and resolution (sipmesh/clients/resolve.py)."""

from __future__ import annotations

import pytest

from sipmesh.clients.resolve import (
    channel_target,
    format_address,
    parse_target,
    resolve_target,
    split_host_port,
    target_resolver,
)


@pytest.mark.parametrize(
    ("target", "entries"),
    [
        ("router:50051", [("router", 50051)]),
        ("dns:///router.sipmesh.svc:50051", [("router.sipmesh.svc", 50051)]),
        ("127.0.0.1:1,127.0.0.1:2", [("127.0.0.1", 1), ("127.0.0.1", 2)]),
        ("[::1]:5000", [("::1", 5000)]),
        ("ipv4:10.0.0.1:1, 10.0.0.2:1", [("10.0.0.1", 1), ("10.0.0.2", 1)]),
        ("a:1,a:1", [("a", 1)]),
    ],
)
def test_parse_target(target: str, entries: list[tuple[str, int]]) -> None:
    assert parse_target(target) == entries


@pytest.mark.parametrize(
    "bad", ["", "router", ":50051", "router:x", "router:0", "::1:5000", "[::1]"]
)
def test_bad_targets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="target"):
        parse_target(bad)


def test_split_and_format_round_trip() -> None:
    assert split_host_port("[2001:db8::1]:5060") == ("2001:db8::1", 5060)
    assert format_address("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert format_address("192.0.2.1", 5060) == "192.0.2.1:5060"


def test_channel_target_for_unary_round_robin() -> None:
    assert channel_target("router:50051") == "dns:///router:50051"
    assert channel_target("10.0.0.1:1,10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channel_target("[::1]:1,[::2]:1") == "ipv6:[::1]:1,[::2]:1"
    with pytest.raises(ValueError, match="mixes"):
        channel_target("10.0.0.1:1,[::1]:1")
    with pytest.raises(ValueError, match="list of names"):
        channel_target("a:1,b:1")


async def test_literals_resolve_to_themselves() -> None:
    assert await resolve_target("127.0.0.1:7,[::1]:7") == ["127.0.0.1:7", "[::1]:7"]


async def test_localhost_resolves_through_getaddrinfo() -> None:
    addresses = await resolve_target("localhost:7")
    assert "127.0.0.1:7" in addresses or "[::1]:7" in addresses


async def test_unresolvable_name_raises_oserror() -> None:
    resolve = target_resolver("no-such-host.invalid:7", use_dns=False)
    with pytest.raises(OSError, match="cannot resolve"):
        await resolve()
