"""EdgeService: the edge's hot path from datagram to transaction layer, and its lifecycle.

Per message, in Kamailio's order: banned source dropped before parsing; non-SIP
dropped; parse (ParseError answered when possible); anti-flood count; RFC 3581
received/rport; REQINIT checks; NAT detection and Contact alias; then the
transaction layer, whose events drive the proxy core. The service also implements
the EdgeClient contract (``send``/``info``) so another edge or service can hand it a
request for a flow it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from opentelemetry.trace import Span
from prometheus_client import CollectorRegistry

from sipmesh.clients.interfaces import EdgeClient, MediaRelayClient, RouterClient
from sipmesh.edge.transport.base import Flow, ListenerInfo, MessageSink
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2, events_pb2, router_pb2
from sipmesh.observe.capture import CapturedFlow, SipCapture
from sipmesh.observe.spans import Spans
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.sip import ParseError, Request, Response, parse_message
from sipmesh.sip.stateless import apply_received, make_response
from sipmesh.sip.transaction import Address, Event, TimerConfig, TransactionLayer, response_address
from sipmesh.state.bus import EventBus
from sipmesh.state.kv import KVStore

from . import forward as fw
from .antiflood import AntiFlood, FloodConfig
from .banevents import BanEvents
from .branches import ProxyTransaction
from .dialogs import DialogEvents
from .drain import RETRY_AFTER, Drain
from .edgeapi import EdgeApi
from .flowtoken import FlowTokens, load_key, path_value
from .media import MediaManager
from .nat import KeepAliveTable, NatTest, add_contact_alias, nat_uac_test
from .outbound import Outbound
from .proxycore import CoreSettings, ProxyCore
from .reqinit import Answer, ReqInit, looks_like_sip
from .stateless import StatelessForwarder
from .stats import EdgeStats
from .txdriver import Sender, TxDriver

__all__ = ["EdgeService", "Transports"]

log = logging.getLogger("sipmesh.edge")


class Transports(Sender, Protocol):
    """The TransportManager as the edge service uses it."""

    async def start(self) -> None: ...
    async def stop(self, grace: float) -> None: ...
    def listeners(self) -> list[ListenerInfo]: ...
    def sip_address(self, transport: str, family: int) -> tuple[str, int]: ...


class Announcer(Protocol):
    """Publishes this edge's gRPC address while it runs (sipmesh.runtime.wiring)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class EdgeService(EdgeApi, MessageSink):
    def __init__(
        self,
        config: SipmeshConfig,
        *,
        router: RouterClient | Callable[[], Awaitable[RouterClient]],
        kv: KVStore,
        transports: Callable[[MessageSink], Transports],
        metrics: CollectorRegistry,
        bus: EventBus | None = None,
        peers: Callable[[], Awaitable[EdgeClient]] | None = None,
        announcer: Announcer | None = None,
        timers: TimerConfig | None = None,
        clock: Callable[[], float] = time.time,
        spans: Spans | None = None,
        capture: SipCapture | None = None,
        media_relay: Callable[[], Awaitable[MediaRelayClient]] | None = None,
        event_streams: tuple[tuple[str, tuple[str, ...]], ...] = (),
    ) -> None:
        self.config = config
        self.edge_id = config.instance_id
        self._router_source = router
        self._kv = kv
        self._bus = bus
        self._peers_source = peers
        self._peers: EdgeClient | None = None
        self._announcer = announcer
        self._clock = clock
        self._spans = spans
        self.capture = capture
        # NATMANAGE: the relay client is resolved on the first media op of a call
        # (none when the process has no relay and no endpoints.media_relay).
        self.media = MediaManager(media_relay, timeout=config.edge.router_timeout, metrics=metrics)
        self.dialogs = DialogEvents(
            self._fire, timeout=config.accounting.dialog_timeout, clock=clock
        )
        # JetStream streams that must exist before events are published, so they
        # are kept even while their consumer (accounting) is not running yet.
        self._event_streams = event_streams
        self.stats = EdgeStats(metrics)
        self.stats.dialogs = self.dialogs.counts
        self.transports = transports(self)
        self._timers = timers or TimerConfig()
        ecfg = config.edge
        self.antiflood: AntiFlood | None = None
        self.ban_events: BanEvents | None = None
        if ecfg.antiflood:
            self.antiflood = AntiFlood(
                kv,
                FloodConfig(
                    ecfg.pike_window,
                    ecfg.pike_limit,
                    ecfg.ban_time,
                    ecfg.ban_sync_interval,
                    tuple(ecfg.trusted_sources),
                ),
                clock=clock,
                on_ban=self._banned,
            )
        self.reqinit = ReqInit(
            is_myself=self.is_myself,
            scanners=ecfg.scanner_user_agents,
            proxy_require_supported=ecfg.proxy_require_supported,
        )
        self.keepalives = KeepAliveTable(ecfg.nat_keepalive_interval)
        # Graceful drain on stop (issue 12): refuse new work, finish calls in progress.
        self.drain = Drain()
        self._hosts: set[str] = set()
        self._ports: set[int] = set()
        self._source: common_pb2.Source | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ka_task: asyncio.Task[None] | None = None
        self._running = False
        self.started_at = 0.0
        self.driver: TxDriver | None = None
        self.core: ProxyCore | None = None
        self.outbound: Outbound | None = None
        self._sl: StatelessForwarder | None = None
        self.flow_tokens: FlowTokens | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        source = self._router_source
        router = source if isinstance(source, RouterClient) else await source()
        if self._peers_source is not None:
            self._peers = await self._peers_source()
        await self._ensure_streams()
        await self.transports.start()
        self._learn_addresses()
        # RFC 5626 flow tokens, with the key every edge of the installation shares.
        self.flow_tokens = FlowTokens(await load_key(self._kv))
        ecfg = self.config.edge
        layer = TransactionLayer(self._timers)
        self.stats.layer = layer
        self.driver = TxDriver(
            layer, self.transports, self._on_event, loop=loop, handover=self._handover
        )
        self._sl = StatelessForwarder(
            edge_id=self.edge_id,
            transmit=self.driver.transmit,
            local_address=self.local_address,
            is_myself=self.is_myself,
            stats=self.stats,
            max_forwards=ecfg.max_forwards,
            tokens=self.flow_tokens,
        )
        self.core = ProxyCore(
            driver=self.driver,
            router=router,
            settings=CoreSettings(
                edge_id=self.edge_id,
                router_timeout=ecfg.router_timeout,
                router_failure_code=ecfg.router_failure_code,
                router_retry_after=ecfg.router_retry_after,
                fr_timer=ecfg.fr_timer,
                fr_inv_timer=ecfg.fr_inv_timer,
                max_forwards=ecfg.max_forwards,
            ),
            stats=self.stats,
            stateless=self._sl,
            local_address=self.local_address,
            publish=self._publish,
            on_final=self._on_final,
            media=self.media,
            dialogs=self.dialogs,
            wall=self._clock,
            tokens=self.flow_tokens,
        )
        self.core.spans = self._spans
        if self.capture is not None:
            await self.capture.start()
            self.core.on_decision = self._capture_flagged
        self.outbound = Outbound(
            self.driver, self._sl, self.local_address, self.edge_id, stats=self.stats
        )
        if self.antiflood is not None:
            self.antiflood.start()
            await self._subscribe_bans(self.antiflood)
        if ecfg.nat_keepalive != "none":
            self._ka_task = loop.create_task(self._keepalive_loop())
        self.started_at = self._clock()
        self._running = True
        if self._announcer is not None:
            await self._announcer.start()

    async def stop(self, grace: float) -> None:
        self._running = False
        if self._announcer is not None:
            await self._announcer.stop()
        if self.core is not None:
            # Drain first (services/edge/drain.py): transports stay open meanwhile.
            core = self.core
            grace = max(1.0, await self.drain.run(lambda: len(core.transactions), grace))
        if self._ka_task is not None:
            self._ka_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ka_task
        if self.ban_events is not None:
            await self.ban_events.stop()
        if self.antiflood is not None:
            await self.antiflood.stop()
        if self.core is not None:
            await self.core.close()
        if self.driver is not None:
            self.driver.close()
        for task in list(self._tasks):
            task.cancel()
        await self.transports.stop(grace)
        if self.capture is not None:
            await self.capture.stop()

    def begin_drain(self) -> None:
        """Stopping begins (called before any module stops): refuse new work now."""
        self._running = False
        self.drain.draining = True

    def ready(self) -> bool:
        return self._running

    async def _ensure_streams(self) -> None:
        bus = self._bus
        if bus is None:
            return
        for stream, subjects in self._event_streams:
            try:
                async with asyncio.timeout(5.0):
                    await bus.ensure_stream(stream, subjects)
            except Exception as exc:
                # Events still go out on the bus; only their capture before the
                # consumer exists is at stake, so the edge starts anyway.
                log.warning("event stream %s not ensured: %s", stream, exc)

    async def _subscribe_bans(self, flood: AntiFlood) -> None:
        """Bans taken by other edges or the admin API hold here at once (banevents.py)."""
        if self._bus is None:
            return
        events = BanEvents(self._bus, flood, instance_id=self.edge_id)
        try:
            async with asyncio.timeout(5.0):
                await events.start()
        except Exception as exc:
            # The periodic ban sync still brings bans in; only their speed is at stake.
            log.warning("ban events not subscribed: %s", exc)
            await events.stop()
            return
        self.ban_events = events

    def _learn_addresses(self) -> None:
        hosts = {d.lower() for d in self.config.domains}
        for info in self.transports.listeners():
            hosts.add(info.advertised[0].lower())
            self._ports.add(info.advertised[1])
            self._ports.add(info.port)
            if info.host in ("0.0.0.0", "::"):
                hosts.update({"127.0.0.1", "::1", "localhost"})
            else:
                hosts.add(info.host.lower())
        self._hosts = hosts

    def is_myself(self, host: str, port: int | None) -> bool:
        """Kamailio's ``myself``: one of our addresses or domains, on one of our ports."""
        return host.strip("[]").lower() in self._hosts and (port is None or port in self._ports)

    def local_address(self, transport: str, family: str) -> tuple[str, int]:
        fam = socket.AF_INET6 if family == "6" else socket.AF_INET
        try:
            return self.transports.sip_address(transport, fam)
        except Exception:
            # No listener of that transport: Via names the first one we have.
            info = self.transports.listeners()[0]
            return info.advertised

    # -- MessageSink ---------------------------------------------------------------------

    def on_message(self, data: bytes, flow: Flow, received_at: float) -> None:
        driver = self.driver
        if driver is None:
            return
        ip, port = flow.remote
        flood = self.antiflood
        if flood is not None and flood.is_banned(ip):
            # ipban: dropped before any parsing (kamailio.cfg REQINIT's first check).
            self.stats.banned_drops.inc()
            return
        if not looks_like_sip(data):
            self.stats.dropped("not-sip")
            return
        source = Address(flow.transport.upper(), ip, port, flow.flow_id)
        try:
            message = parse_message(data, max_size=self.config.edge.max_message_size)
        except ParseError as exc:
            self._malformed(exc, source)
            return
        if isinstance(message, Response):
            self._on_response(message, ip, port, flow, source)
            return
        self.stats.request_received(message.method)
        if flood is not None and not flood.allow(ip):
            self.stats.dropped("flood")
            return
        try:
            apply_received(message, ip, port)
            verdict = self.reqinit.check(message)
        except ParseError as exc:
            self._malformed(exc, source)
            return
        if self.drain.draining and self.drain.refuses(message, driver.layer):
            retry = (("Retry-After", RETRY_AFTER),)
            self._answer(message, source, 503, "Service Unavailable", retry)
            return
        if verdict is not None:
            if isinstance(verdict, Answer):
                if verdict.status == 416:
                    self.stats.bad_uris_rcvd.inc()
                self._answer(message, source, verdict.status, verdict.reason, verdict.headers)
            else:
                self.stats.dropped(verdict.reason)
            return
        tests = nat_uac_test(message, ip, port)
        if (
            tests
            and self.config.edge.nat_alias
            and message.method != "REGISTER"
            and "contact" in message
        ):
            add_contact_alias(message, ip, port, flow.transport)
        self._source = self._source_pb(flow, received_at, tests)
        if message.method == "REGISTER":
            self._register_flow(message, flow, self._source)
        try:
            driver.receive(message, source)
        finally:
            self._source = None

    def _register_flow(self, message: Request, flow: Flow, source: common_pb2.Source) -> None:
        """The flow a REGISTER came over, as a token for the registrar (stored with
        the binding) and, when the UA supports path or outbound, as our Path
        (Kamailio's add_path_received / outbound; RFC 3327 §4.2, RFC 5626 §5.1)."""
        tokens = self.flow_tokens
        if tokens is None:
            return
        source.flow_token = token = tokens.encode(self.edge_id, flow.flow_id)
        options = {*message.tokens("supported"), *message.tokens("require")}
        if "path" not in options and "outbound" not in options:
            return
        host, port = self.local_address(flow.transport, "6" if ":" in flow.remote[0] else "4")
        outbound = "outbound" in options
        message.add("Path", path_value(token, flow.transport, host, port, outbound=outbound),
                    first=True)  # fmt: skip

    def on_flow_closed(self, flow: Flow) -> None:
        self.keepalives.forget_flow(flow.flow_id)
        if self.driver is not None:
            addr = Address(flow.transport.upper(), flow.remote[0], flow.remote[1], flow.flow_id)
            if self.driver.layer.report_unreachable(addr, self.driver.now()):
                self.driver.pump()

    def _on_response(
        self, message: Response, ip: str, port: int, flow: Flow, source: Address
    ) -> None:
        assert self.driver is not None
        if self.config.edge.nat_alias and (
            flow.transport in ("ws", "wss")
            or nat_uac_test(message, ip, port, NatTest.CONTACT_PRIVATE)
        ):
            # NATMANAGE for replies: the callee's Contact becomes routable. A WebSocket
            # callee is reachable only over its connection (RFC 7118 §5; its Contact
            # host is usually *.invalid): Kamailio's nat_uac_test bit 64.
            add_contact_alias(message, ip, port, flow.transport)
        self.driver.receive(message, source)

    def _source_pb(self, flow: Flow, received_at: float, tests: int) -> common_pb2.Source:
        transport = fw.transport_enum(flow.transport)
        return common_pb2.Source(
            remote=common_pb2.Address(
                transport=transport, host=flow.remote[0], port=flow.remote[1]
            ),
            local=common_pb2.Address(transport=transport, host=flow.local[0], port=flow.local[1]),
            socket=flow.listener,
            edge_id=self.edge_id,
            flow_id=flow.flow_id,
            nat_detected=bool(tests),
            nat_tests=tests,
            received_at=received_at,
            tls_peer_subject=flow.tls_peer_subject,
            ws_origin=flow.ws_origin,
        )

    def _malformed(self, exc: ParseError, source: Address) -> None:
        self.stats.err_requests.inc()
        partial = exc.partial
        if partial is None or partial.method == "ACK":
            self.stats.dropped("malformed")
            return
        verdict = ReqInit.parse_failure(exc)
        if isinstance(verdict, Answer):
            self._answer(partial, source, verdict.status, verdict.reason, verdict.headers)

    def _answer(
        self,
        request: Request,
        source: Address,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """sl_send_reply: a stateless answer, back where the request came from."""
        assert self.driver is not None
        try:
            reply = make_response(request, status, reason, headers=headers)
            dest = response_address(request, source)
        except (ParseError, ValueError):
            self.stats.dropped("unanswerable")
            return
        self.stats.replied(status)
        self.driver.transmit(bytes(reply), dest)

    def _on_event(self, event: Event) -> None:
        assert self.core is not None
        assert self.outbound is not None
        if self.outbound.on_event(event):
            return
        self.core.on_event(event, self._source)

    def _capture_flagged(self, ptx: ProxyTransaction, decision: router_pb2.Decision) -> None:
        # sip_trace_mode("t"/"d"): the router flagged the transaction for capture.
        if decision.flags and self.capture is not None:
            src, local = ptx.source, ptx.source_pb.local
            flow = CapturedFlow(
                src.transport.lower(), (src.host, src.port), (local.host, local.port)
            )
            self.capture.on_flags(decision.flags, bytes(ptx.request), flow, self._clock())

    # -- events, bans, keep-alives ---------------------------------------------------------

    def _fire(self, subject: str, envelope: events_pb2.Envelope, span: Span | None = None) -> None:
        bus = self._bus
        if bus is None:
            return
        envelope.time = self._clock()
        envelope.instance = self.edge_id
        envelope.service = "edge"
        data = envelope.SerializeToString()

        async def publish() -> None:
            try:
                await bus.publish(subject, data)
            except Exception as exc:  # fire and forget (DESIGN.md, Performance)
                log.debug("event %s not published: %s", subject, exc)

        loop = asyncio.get_running_loop()
        if span is None:
            task = loop.create_task(publish())
        else:
            # The task copies the context: the bus message carries the transaction's
            # trace (TracedBus), and the consumer's span (accounting) joins it.
            with Spans.current(span):
                task = loop.create_task(publish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, event: events_pb2.TransactionEvent) -> None:
        env = events_pb2.Envelope(id=f"{self.edge_id}:{event.transaction_id}", transaction=event)
        span = None
        if self._spans is not None and self._spans.enabled and self.core is not None:
            ptx = self.core.transactions.get(event.transaction_id)
            span = ptx.span if ptx is not None else None
        self._fire(f"sipmesh.transaction.{event.method}", env, span)

    def _banned(self, ip: str, until: float) -> None:
        self.stats.bans.inc()
        log.info("anti-flood: banned %s", ip)
        ban = events_pb2.BanEvent(
            kind=events_pb2.BanEvent.KIND_ADDED, ip=ip, expires_at=until, reason="flood"
        )
        self._fire("sipmesh.ban.added", events_pb2.Envelope(id=f"ban:{ip}:{until}", ban=ban))

    def _on_final(self, ptx: ProxyTransaction, response: Response) -> None:
        self.drain.on_final(ptx.request, response)
        # fix_nated_register's other half: this edge received the REGISTER, so it owns
        # the NAT binding and is the one instance that keeps it open.
        src = ptx.source_pb
        if ptx.request.method != "REGISTER" or not src.nat_detected or response.status >= 300:
            return
        default = response.expires or 3600
        now = self._clock()
        for contact in response.contacts:
            if contact.is_star:
                continue
            expires = contact.expires if contact.expires is not None else default
            self.keepalives.register(
                str(contact.uri),
                ptx.source.transport,
                ptx.source.host,
                ptx.source.port,
                ptx.source.flow,
                expires,
                now,
            )
            break  # one keep-alive per NAT binding (keyed by the source address)

    def _listener_infos(self) -> list[edge_pb2.EdgeInfo.Listener]:
        return [
            edge_pb2.EdgeInfo.Listener(
                transport=fw.transport_enum(i.transport),
                host=i.host,
                port=i.port,
                advertised=f"{fw.format_host(i.advertised[0])}:{i.advertised[1]}",
            )
            for i in self.transports.listeners()
        ]
