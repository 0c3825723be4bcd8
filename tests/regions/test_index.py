"""The remote location index (sipmesh/regions/index.py) over the memory KV store."""

from __future__ import annotations

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.regions.index import KEY_PREFIX, RemoteHome, RemoteIndex
from sipmesh.state.clock import FakeClock
from sipmesh.state.kv_memory import MemoryKV

Kind = events_pb2.RegistrationEvent


def event(
    kind: int, aor: str, expires_at: float, contacts: int = 1
) -> events_pb2.RegistrationEvent:
    binding = common_pb2.Binding(aor=aor, contact=f"sip:{aor}@10.0.0.1", expires_at=expires_at)
    return events_pb2.RegistrationEvent(kind=kind, binding=binding, contacts=contacts)  # type: ignore[arg-type]


def make() -> tuple[RemoteIndex, MemoryKV, FakeClock]:
    clock = FakeClock()
    kv = MemoryKV(prefix="t:", clock=clock)
    return RemoteIndex(kv, clock=clock), kv, clock


async def test_added_binding_is_found_with_its_home_region() -> None:
    index, kv, clock = make()
    assert await index.apply("a", "sip:edge-a:5060", event(Kind.KIND_ADDED, "alice", clock() + 300))
    home = await index.lookup("alice")
    assert home == RemoteHome("a", "sip:edge-a:5060", clock() + 300)
    assert await index.lookup("bob") is None
    # The entry expires with the binding: the KV TTL follows the binding's expiry.
    ttl = await kv.ttl(KEY_PREFIX + "alice")
    assert ttl is not None
    assert 299 <= ttl <= 300


async def test_entry_lives_as_long_as_the_longest_binding() -> None:
    index, _, clock = make()
    await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "alice", clock() + 600))
    await index.apply("a", "sip:a", event(Kind.KIND_REFRESHED, "alice", clock() + 60, contacts=2))
    home = await index.lookup("alice")
    assert home is not None
    assert home.expires_at == clock() + 600


async def test_removal_of_the_last_binding_deletes_the_entry() -> None:
    index, _, clock = make()
    await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "alice", clock() + 300, contacts=2))
    # One of two contacts removed: the user is still at home in a.
    assert not await index.apply("a", "sip:a", event(Kind.KIND_REMOVED, "alice", 0, contacts=1))
    assert await index.lookup("alice") is not None
    assert await index.apply("a", "sip:a", event(Kind.KIND_EXPIRED, "alice", 0, contacts=0))
    assert await index.lookup("alice") is None


async def test_removal_in_another_region_keeps_the_entry() -> None:
    index, _, clock = make()
    await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "alice", clock() + 300))
    assert not await index.apply("c", "sip:c", event(Kind.KIND_REMOVED, "alice", 0, contacts=0))
    home = await index.lookup("alice")
    assert home is not None
    assert home.region == "a"


async def test_user_moving_region_follows_the_latest_registration() -> None:
    index, _, clock = make()
    await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "alice", clock() + 300))
    await index.apply("c", "sip:c", event(Kind.KIND_ADDED, "alice", clock() + 100))
    home = await index.lookup("alice")
    assert home is not None
    assert (home.region, home.address) == ("c", "sip:c")


async def test_expired_or_broken_entries_are_not_returned() -> None:
    index, kv, clock = make()
    # An event whose binding already expired is not indexed.
    assert not await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "old", clock() - 1))
    assert await index.lookup("old") is None
    await kv.set(KEY_PREFIX + "junk", b"not json")
    assert await index.lookup("junk") is None
    # The stored expiry is checked too (a store whose TTL has not fired yet).
    await kv.set(KEY_PREFIX + "late", RemoteHome("a", "sip:a", clock() - 5).encode())
    assert await index.lookup("late") is None


async def test_permanent_binding_has_no_expiry() -> None:
    index, kv, _ = make()
    await index.apply("a", "sip:a", event(Kind.KIND_ADDED, "static", 0))
    home = await index.lookup("static")
    assert home is not None
    assert home.expires_at == 0
    assert await kv.ttl(KEY_PREFIX + "static") == float("inf")
