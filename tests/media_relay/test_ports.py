"""Port-pair allocation: even RTP / odd RTCP, exhaustion, ports taken by others."""

from __future__ import annotations

import socket

import pytest

from sipmesh.media_relay.ports import PortAllocator, PortsExhausted

from .conftest import random_range


def test_pairs_are_even_odd_bound_and_exhaust_clearly() -> None:
    low, _ = random_range()
    allocator = PortAllocator(low, low + 5)  # 3 pairs
    assert allocator.capacity == 3
    pairs = [allocator.allocate("127.0.0.1") for _ in range(3)]
    try:
        for pair in pairs:
            assert pair.port % 2 == 0
            assert pair.rtcp_port == pair.port + 1
            assert pair.rtp.getsockname()[1] == pair.port
            assert pair.rtcp.getsockname()[1] == pair.rtcp_port
        assert allocator.free("127.0.0.1") == 0
        with pytest.raises(PortsExhausted, match=r"no free RTP/RTCP port pair .* on 127\.0\.0\.1"):
            allocator.allocate("127.0.0.1")
        allocator.release(pairs[0])
        again = allocator.allocate("127.0.0.1")
        assert again.port == pairs[0].port
        pairs[0] = again
    finally:
        for pair in pairs:
            allocator.release(pair)


def test_a_port_taken_by_another_process_is_skipped() -> None:
    low, _ = random_range()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", low + 1))  # the RTCP port of the first pair
    allocator = PortAllocator(low, low + 3)
    try:
        pair = allocator.allocate("127.0.0.1")
        assert pair.port == low + 2
        with pytest.raises(PortsExhausted):
            allocator.allocate("127.0.0.1")
        allocator.release(pair)
    finally:
        blocker.close()


def test_ipv6_and_ipv4_have_separate_ranges() -> None:
    low, _ = random_range()
    allocator = PortAllocator(low, low + 1)
    v4 = allocator.allocate("127.0.0.1")
    v6 = allocator.allocate("::1")
    try:
        assert v4.port == v6.port == low
        assert v6.rtp.family == socket.AF_INET6
    finally:
        allocator.release(v4)
        allocator.release(v6)


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no RTP/RTCP pair"):
        PortAllocator(30001, 30001)
