"""MediaRelayService: the relay as a sipmesh service and a MediaRelayClient.

In one process the router awaits this object directly; split, the gRPC adapter of
sipmesh.clients serves it. The ng listener (ng.py) calls the same methods.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sipmesh.clients.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2
from sipmesh.media_relay.ng import NgServer
from sipmesh.media_relay.ports import PortAllocator, PortsExhausted
from sipmesh.media_relay.relay import Relay, Stream
from sipmesh.media_relay.sdp_rewrite import SdpError, parse_flags
from sipmesh.media_relay.sessions import (
    AddressPlan,
    RelayError,
    Rewritten,
    Session,
    SessionLimit,
    SessionNotFound,
    SessionTable,
)
from sipmesh.media_relay.timeouts import MediaTimeouts
from sipmesh.observe.spans import Spans
from sipmesh.runtime.config import split_hostport
from sipmesh.runtime.sections.media_relay import MediaRelayConfig
from sipmesh.state.bus import EventBus

__all__ = ["MediaRelayService", "primary_address"]

log = logging.getLogger("sipmesh.media_relay")


def primary_address(family: int) -> str | None:
    """The source address the host would use towards the Internet (no packet is sent)."""
    probe = ("2001:db8::1", 9) if family == socket.AF_INET6 else ("192.0.2.1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(probe)
            address: str = sock.getsockname()[0]
            return address
    except OSError:
        return None


def _address_plan(config: MediaRelayConfig) -> AddressPlan:
    def advertised(bind: str, adv: str, family: int, loopback: str) -> str:
        if adv or not bind:
            return adv
        if not ipaddress.ip_address(bind).is_unspecified:
            return bind
        return primary_address(family) or loopback

    return AddressPlan(
        bind_v4=config.bind_ipv4,
        bind_v6=config.bind_ipv6,
        advertise_v4=advertised(
            config.bind_ipv4, config.advertise_ipv4, socket.AF_INET, "127.0.0.1"
        ),
        advertise_v6=advertised(config.bind_ipv6, config.advertise_ipv6, socket.AF_INET6, "::1"),
    )


def _address(pair_host: str, port: int) -> common_pb2.Address:
    return common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host=pair_host, port=port)


class MediaRelayService:
    # Span helpers (sipmesh.observe); the module factory sets the process's own.
    spans: Spans = Spans.off()

    def __init__(
        self,
        config: MediaRelayConfig,
        *,
        bus: EventBus | None = None,
        metrics: CollectorRegistry | None = None,
        relay_id: str = "media-relay",
        instance: str = "",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.port_max <= config.port_min:
            raise ValueError("media_relay.port_max must be above port_min")
        self.config = config
        self._bus = bus
        self.relay_id = config.relay_id or relay_id
        self._instance = instance or self.relay_id
        self._clock = clock
        self._monotonic = monotonic
        self.addresses = _address_plan(config)
        self._ports = PortAllocator(config.port_min, config.port_max)
        self._relay: Relay | None = None
        self._table: SessionTable | None = None
        self._timeouts: MediaTimeouts | None = None
        self._ng: NgServer | None = None
        self._running = False
        self.sessions_created = 0
        self.exhausted = 0
        if metrics is not None:
            metrics.register(_RelayCollector(self))

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._relay = Relay(
            loop,
            strictness=self.config.strictness,
            relatch_after=self.config.relatch_after,
            monotonic=self._monotonic,
        )
        self._table = SessionTable(
            self._ports,
            self._relay,
            self.addresses,
            max_sessions=self.config.max_sessions,
            clock=self._clock,
            monotonic=self._monotonic,
        )
        self._timeouts = MediaTimeouts(
            self._table,
            self._bus,
            timeout=self.config.media_timeout,
            relay_id=self.relay_id,
            instance=self._instance,
            clock=self._clock,
            monotonic=self._monotonic,
        )
        if self.config.ng_listen:
            host, port = split_hostport(self.config.ng_listen)
            self._ng = await NgServer.listen(self, host, port)
        self._timeouts.start()
        self._running = True

    async def stop(self, grace: float) -> None:
        self._running = False
        if self._ng is not None:
            await self._ng.close()
        if self._timeouts is not None:
            await self._timeouts.stop()
        if self._table is not None:
            self._table.close()

    def ready(self) -> bool:
        return self._running

    @property
    def ng_address(self) -> tuple[str, int] | None:
        return self._ng.address if self._ng is not None else None

    @property
    def table(self) -> SessionTable:
        if self._table is None:
            raise Unavailable("media relay not started")
        return self._table

    @property
    def relay(self) -> Relay:
        if self._relay is None:
            raise Unavailable("media relay not started")
        return self._relay

    @property
    def timeouts(self) -> MediaTimeouts:
        if self._timeouts is None:
            raise Unavailable("media relay not started")
        return self._timeouts

    @property
    def ng(self) -> NgServer | None:
        return self._ng

    # -- MediaRelayClient -------------------------------------------------------------
    # Each call in a SERVER span (child of the router's or edge's, whose context came
    # in the gRPC metadata) when tracing is on; off, the body runs with no span work.
    async def offer(
        self, request: media_relay_pb2.OfferRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        if not self.spans.enabled:
            return self._offer(request)
        with self.spans.call("media_relay.offer", **_span_args(request.key)):
            return self._offer(request)

    async def answer(
        self, request: media_relay_pb2.AnswerRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        if not self.spans.enabled:
            return self._answer(request)
        with self.spans.call("media_relay.answer", **_span_args(request.key)):
            return self._answer(request)

    async def delete(
        self, request: media_relay_pb2.DeleteRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.DeleteReply:
        if not self.spans.enabled:
            return self._delete(request)
        with self.spans.call("media_relay.delete", **_span_args(request.key)):
            return self._delete(request)

    def _offer(self, request: media_relay_pb2.OfferRequest) -> media_relay_pb2.SdpReply:
        table = self._serving()
        key = request.key
        existed = _has(table, key.call_id)
        done = self._control(
            lambda flags: table.offer(
                key.call_id,
                key.from_tag,
                request.sdp,
                flags,
                source_ip=request.source.host or None,
                via_branch=key.via_branch,
            ),
            request.flags,
        )
        if not existed:
            self.sessions_created += 1
        return media_relay_pb2.SdpReply(sdp=done.sdp, warnings=done.warnings)

    def _answer(self, request: media_relay_pb2.AnswerRequest) -> media_relay_pb2.SdpReply:
        table = self._serving()
        key = request.key
        done = self._control(
            lambda flags: table.answer(
                key.call_id,
                key.from_tag,
                key.to_tag,
                request.sdp,
                flags,
                source_ip=request.source.host or None,
                via_branch=key.via_branch,
            ),
            request.flags,
        )
        return media_relay_pb2.SdpReply(sdp=done.sdp, warnings=done.warnings)

    def _delete(self, request: media_relay_pb2.DeleteRequest) -> media_relay_pb2.DeleteReply:
        table = self._serving()
        session = self._lookup(table, request.key)
        stats = self.session_stats(session)
        try:
            table.delete(session.call_id, request.key.via_branch)
        except SessionNotFound as exc:
            raise NotFound(str(exc)) from None
        return media_relay_pb2.DeleteReply(stats=stats)

    async def query(
        self, request: media_relay_pb2.QueryRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.QueryReply:
        session = self._lookup(self._serving(), request.key)
        return media_relay_pb2.QueryReply(stats=self.session_stats(session))

    async def list_sessions(
        self, request: media_relay_pb2.ListSessionsRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.ListSessionsReply:
        table = self._serving()
        sessions = list(table)
        shown = sessions[: request.limit] if request.limit else sessions
        return media_relay_pb2.ListSessionsReply(
            sessions=[self.session_stats(s) for s in shown], total=len(sessions)
        )

    async def ping(
        self, request: media_relay_pb2.RelayPingRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.RelayPingReply:
        table = self._serving()
        return media_relay_pb2.RelayPingReply(
            relay_id=self.relay_id, sessions=len(table), free_ports=2 * table.free_ports()
        )

    # -- statistics -------------------------------------------------------------------
    def session_stats(self, session: Session) -> media_relay_pb2.SessionStats:
        mono = self._monotonic()
        wall = self._clock()

        def at(last: float) -> float:
            return wall - (mono - last) if last else 0.0

        legs = []
        total_packets = total_bytes = total_errors = 0
        last = 0.0
        for leg in session.legs():
            streams = []
            for s in leg.streams:
                streams.append(_stream_stats(s, at(s.last_packet)))
                total_packets += s.packets
                total_bytes += s.bytes
                total_errors += s.errors
                last = max(last, s.last_packet)
            legs.append(media_relay_pb2.LegStats(tag=leg.tag, streams=streams))
        return media_relay_pb2.SessionStats(
            key=media_relay_pb2.MediaSessionKey(
                call_id=session.call_id, from_tag=session.from_tag, to_tag=session.to_tag
            ),
            created_at=session.created_at,
            last_signal_at=session.last_signal_at,
            legs=legs,
            packets=total_packets,
            bytes=total_bytes,
            errors=total_errors,
            last_packet_at=at(last),
        )

    def totals(self) -> tuple[int, int, int]:
        """(packets, bytes, errors) relayed since start, live and closed sessions."""
        relay = self._relay
        if relay is None or self._table is None:
            return 0, 0, 0
        packets, nbytes, errors = relay.closed_packets, relay.closed_bytes, relay.closed_errors
        for session in self._table:
            for s in session.streams():
                packets += s.packets
                nbytes += s.bytes
                errors += s.errors
        return packets, nbytes, errors

    # -- helpers ----------------------------------------------------------------------
    def _serving(self) -> SessionTable:
        if not self._running or self._table is None:
            raise Unavailable("media relay is not running")
        return self._table

    def _control(self, run: Callable[..., Rewritten], flags: Iterable[str]) -> Rewritten:
        try:
            parsed = parse_flags(flags, ice_default=self.config.ice)
            return run(parsed)
        except SdpError as exc:
            raise InvalidArgument(f"malformed SDP: {exc}") from None
        except SessionNotFound as exc:
            raise NotFound(str(exc)) from None
        except PortsExhausted as exc:
            self.exhausted += 1
            raise ResourceExhausted(str(exc)) from None
        except SessionLimit as exc:
            self.exhausted += 1
            raise ResourceExhausted(str(exc)) from None
        except RelayError as exc:
            raise InvalidArgument(str(exc)) from None

    @staticmethod
    def _lookup(table: SessionTable, key: media_relay_pb2.MediaSessionKey) -> Session:
        if not key.call_id:
            raise InvalidArgument("call-id is missing")
        try:
            session = table.get(key.call_id)
        except SessionNotFound as exc:
            raise NotFound(str(exc)) from None
        if key.from_tag and session.leg_by_tag(key.from_tag) is None:
            raise NotFound(f"call {key.call_id!r} has no party with tag {key.from_tag!r}")
        return session


def _span_args(key: media_relay_pb2.MediaSessionKey) -> dict[str, Any]:
    """The span kind and attributes of one relay call (the session's Call-ID)."""
    return {"kind": SpanKind.SERVER, "attributes": {"sip.call_id": key.call_id}}


def _has(table: SessionTable, call_id: str) -> bool:
    try:
        table.get(call_id)
    except SessionNotFound:
        return False
    return True


def _stream_stats(s: Stream, last_packet_at: float) -> media_relay_pb2.StreamStats:
    host = s.pair.host
    peer = s.rtp_peer
    return media_relay_pb2.StreamStats(
        index=s.index,
        media_type=s.media,
        local_rtp=_address(host, s.pair.port),
        local_rtcp=None if s.mux else _address(host, s.pair.rtcp_port),
        peer=_address(peer[0], peer[1]) if peer is not None else None,
        latched=s.rtp_latched,
        packets=s.packets,
        bytes=s.bytes,
        errors=s.errors,
        last_packet_at=last_packet_at,
    )


class _RelayCollector(Collector):
    """Reads the relay's plain counters at scrape time (nothing per packet)."""

    def __init__(self, service: MediaRelayService) -> None:
        self._service = service

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        svc = self._service
        packets, nbytes, errors = svc.totals()
        table = svc._table
        yield GaugeMetricFamily(
            "sipmesh_media_relay_sessions", "calls relayed now", value=len(table) if table else 0
        )
        yield GaugeMetricFamily(
            "sipmesh_media_relay_free_port_pairs",
            "RTP/RTCP port pairs free in the range",
            value=table.free_ports() if table else 0,
        )
        yield CounterMetricFamily(
            "sipmesh_media_relay_packets", "RTP and RTCP packets received", value=packets
        )
        yield CounterMetricFamily("sipmesh_media_relay_bytes", "bytes received", value=nbytes)
        yield CounterMetricFamily(
            "sipmesh_media_relay_errors",
            "packets dropped (stranger, no destination, send failure)",
            value=errors,
        )
        yield CounterMetricFamily(
            "sipmesh_media_relay_sessions_created", "calls created", value=svc.sessions_created
        )
        yield CounterMetricFamily(
            "sipmesh_media_relay_timeouts",
            "calls deleted by the media timeout",
            value=svc._timeouts.timed_out if svc._timeouts else 0,
        )
        yield CounterMetricFamily(
            "sipmesh_media_relay_exhausted",
            "offers refused: port range or session limit exhausted",
            value=svc.exhausted,
        )
        ng = svc._ng
        yield CounterMetricFamily(
            "sipmesh_media_relay_ng_requests",
            "ng datagrams received",
            value=ng.requests if ng else 0,
        )
        yield CounterMetricFamily(
            "sipmesh_media_relay_ng_errors",
            "ng requests answered with an error",
            value=ng.errors if ng else 0,
        )
