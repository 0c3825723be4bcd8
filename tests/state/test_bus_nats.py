"""NatsBus specifics on the real NATS + JetStream server: stream limits."""

from __future__ import annotations

import pytest

from sipmesh.state.bus import stream_name
from sipmesh.state.bus_nats import NatsBus

pytestmark = pytest.mark.nats


async def test_event_streams_get_a_max_age_and_keep_it_up_to_date(
    nats_url: str, unique_prefix: str
) -> None:
    bus = await NatsBus.connect(nats_url, prefix=unique_prefix, stream_max_age=3600.0)
    later = await NatsBus.connect(nats_url, prefix=unique_prefix, stream_max_age=7200.0)
    name = stream_name(unique_prefix, "EVENTS")
    try:
        await bus.ensure_stream("EVENTS", ["ev.>"])
        info = await bus._js.stream_info(name)
        assert info.config.max_age == 3600.0
        # A process configured otherwise (an operator changed event_retention) updates it.
        await later.ensure_stream("EVENTS", ["ev.>"])
        info = await bus._js.stream_info(name)
        assert info.config.max_age == 7200.0
        assert info.config.subjects == [f"{unique_prefix}.ev.>"]
    finally:
        await bus.delete_stream("EVENTS")
        await bus.close()
        await later.close()
