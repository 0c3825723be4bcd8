"""Choosing among relays: consistent hashing of the Call-ID, skipping silent relays."""

from __future__ import annotations

import pytest

from sipmesh.media_relay.selection import (
    NoRelayAvailable,
    RelaySelector,
    ng_pinger,
    rendezvous_order,
)
from sipmesh.media_relay.service import MediaRelayService

from .conftest import relay_config


def test_the_same_call_goes_to_the_same_relay_and_load_spreads() -> None:
    relays = ["a:1", "b:1", "c:1"]
    calls = [f"call-{i}" for i in range(300)]
    first = {c: rendezvous_order(c, relays)[0] for c in calls}
    assert first == {c: rendezvous_order(c, list(reversed(relays)))[0] for c in calls}
    counts = {r: list(first.values()).count(r) for r in relays}
    assert all(n > 50 for n in counts.values()), counts
    # Removing a relay moves only its own calls.
    without_b = {c: rendezvous_order(c, ["a:1", "c:1"])[0] for c in calls}
    assert all(without_b[c] == first[c] for c in calls if first[c] != "b:1")


async def test_a_relay_that_stops_answering_pings_is_skipped() -> None:
    relays = [MediaRelayService(relay_config()) for _ in range(2)]
    for relay in relays:
        await relay.start()
    names = [f"127.0.0.1:{r.ng_address[1]}" for r in relays if r.ng_address]
    selector = RelaySelector(names, ng_pinger(timeout=0.2), fail_after=1)
    try:
        await selector.check()
        assert selector.healthy() == names
        owned = {f"c{i}": selector.choose(f"c{i}") for i in range(50)}
        assert set(owned.values()) == set(names)
        await relays[0].stop(0)  # its ng socket is gone: pings time out
        await selector.check()
        assert selector.healthy() == [names[1]]
        assert {selector.choose(c) for c in owned} == {names[1]}
        await relays[1].stop(0)
        await selector.check()
        with pytest.raises(NoRelayAvailable, match="none of 2 media relays"):
            selector.choose("c1")
    finally:
        for relay in relays:
            await relay.stop(0)
