"""The presence service: PresenceClient (handle, deliver) plus its bus consumers.

Bus subjects (events.proto, under the bus prefix):
- ``sipmesh.presence.<package>`` (PresenceEvent): from a presence instance
  (``Envelope.service == "presence"``) it announces that the package state of a
  presentity changed; every instance receives it and NOTIFYs the subscriptions it
  owns. From anyone else (admin API, a voicemail gateway) it is state to store: one
  instance (queue group) stores it and announces the change.
- ``sipmesh.dialog.>`` and ``sipmesh.transaction.INVITE|BYE``: call events for the
  dialog package (queue group: one instance records each).
- ``sipmesh.registration.added`` and ``.refreshed``: offline messages for the AOR
  are delivered (queue group: one instance delivers), as msilo's m_dump after
  every REGISTER.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge

from sipmesh.clients.errors import InvalidArgument
from sipmesh.clients.interfaces import EdgeClient
from sipmesh.gen.sipmesh.v1 import events_pb2, presence_pb2
from sipmesh.observe.spans import Spans
from sipmesh.presence.calls import CallState
from sipmesh.presence.model import Publication, Subscription, presentity_uri, split_uri
from sipmesh.presence.msilo import MessageStore
from sipmesh.presence.notifier import Notifier
from sipmesh.presence.packages import BadBody, Package, default_packages
from sipmesh.presence.policy import Policy
from sipmesh.presence.publish import PublishHandler, new_etag
from sipmesh.presence.replies import Reject, event_package, reply
from sipmesh.presence.store import PresenceStore
from sipmesh.presence.subscribe import SubscribeHandler
from sipmesh.presence.subscriptions import SubscriptionManager
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.sip import ParseError, Request, parse_message
from sipmesh.state.bus import EventBus, Message
from sipmesh.state.bus import Subscription as BusSubscription
from sipmesh.state.db import Database
from sipmesh.state.errors import StateError
from sipmesh.state.kv import KVStore

log = logging.getLogger("sipmesh.presence")

SUBJECT_PRESENCE = "sipmesh.presence."
ALLOW = "PUBLISH, SUBSCRIBE, MESSAGE, NOTIFY"


class PresenceService:
    # Span helpers (sipmesh.observe); the module factory sets the process's own.
    spans: Spans = Spans.off()

    def __init__(
        self,
        *,
        config: PresenceConfig,
        instance_id: str,
        db: Database,
        kv: KVStore,
        bus: EventBus,
        edge: EdgeClient | None = None,
        edge_factory: Callable[[], Awaitable[EdgeClient]] | None = None,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        packages: dict[str, Package] | None = None,
    ) -> None:
        self.config = config
        self.instance_id = instance_id
        self._bus = bus
        self._edge_factory = edge_factory
        self._clock = clock
        self.packages = packages or default_packages()
        self.store = PresenceStore(db, kv)
        self.notifier = Notifier(edge, config.notify_timeout_ms)
        self.manager = SubscriptionManager(
            instance_id=instance_id,
            store=self.store,
            packages=self.packages,
            notifier=self.notifier,
            announce=self.announce,
        )
        self.policy = Policy(config.policy, self.store)
        self.publish = PublishHandler(config, self.store, self.packages, self.announce)
        self.subscribe = SubscribeHandler(
            config, self.store, self.publish, self.policy, self.manager, self.announce
        )
        self.calls = CallState(self.store, self.announce, config.dialog_linger)
        self.msilo = MessageStore(config, db, edge)
        self._subs: list[BusSubscription] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._running = False
        self._requests: Counter | None = None
        if registry is not None:
            self._metrics(registry)

    def _metrics(self, registry: CollectorRegistry) -> None:
        requests = Counter(
            "sipmesh_presence_requests",
            "PUBLISH/SUBSCRIBE/MESSAGE handled, by method and status",
            ["method", "code"],
            registry=registry,
        )
        self._requests = requests
        Gauge(
            "sipmesh_presence_active_watchers",
            "subscriptions owned by this instance",
            registry=registry,
        ).set_function(lambda: len(self.manager.owned))
        for name, attr in (
            ("stored_messages", "stored"),
            ("dumped_messages", "dumped"),
            ("failed_messages", "failed"),
        ):
            Gauge(f"sipmesh_{name}", f"msilo {name}", registry=registry).set_function(
                self._reader(attr)
            )

    def _reader(self, attr: str) -> Callable[[], float]:
        return lambda: float(getattr(self.msilo, attr))

    def now(self) -> int:
        return int(self._clock())

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.notifier.edge is None and self._edge_factory is not None:
            edge = await self._edge_factory()
            self.notifier.edge = edge
            self.msilo.edge = edge
        await self.store.heartbeat(self.instance_id, self._alive_ttl)
        bus = self._bus
        self._subs = [
            await bus.subscribe(SUBJECT_PRESENCE + ">", self._on_change),
            await bus.subscribe(SUBJECT_PRESENCE + ">", self._on_input, queue="presence-input"),
            await bus.subscribe("sipmesh.dialog.>", self._on_call, queue="presence-calls"),
            await bus.subscribe(
                "sipmesh.transaction.INVITE", self._on_call, queue="presence-calls"
            ),
            await bus.subscribe("sipmesh.transaction.BYE", self._on_call, queue="presence-calls"),
            await bus.subscribe(
                "sipmesh.registration.added", self._on_registration, queue="presence-msilo"
            ),
            # A refresh too, as kamailio.cfg calls m_dump() after every successful
            # save(): messages a contact refused (non-2xx) are tried again at the
            # next REGISTER, not only once the binding has expired and come back.
            await bus.subscribe(
                "sipmesh.registration.refreshed", self._on_registration, queue="presence-msilo"
            ),
        ]
        self._running = True
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def stop(self, grace: float) -> None:
        self._running = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for sub in self._subs:
            with contextlib.suppress(StateError):
                await sub.stop()
        self._subs = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.manager.drain()

    def ready(self) -> bool:
        return self._running and self._bus.healthy and self.store.db.healthy

    @property
    def _alive_ttl(self) -> float:
        return max(3 * self.config.sweep_interval, 5.0)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except StateError as exc:
                log.warning("presence sweep failed: %s", exc)

    async def sweep(self) -> None:
        """Expire publications, subscriptions and offline messages (timer_period)."""
        now = self.now()
        await self.store.heartbeat(self.instance_id, self._alive_ttl)
        for row in await self.store.expired_publications(now):
            # The instance whose DELETE removed the row announces the change, once.
            if await self.store.delete_publication_id(int(row["id"])):
                await self.announce(row["event"], presentity_uri(row["username"], row["domain"]))
        await self.manager.adopt(now)
        await self.manager.expire(now)
        await self.msilo.expire(now)

    async def drain(self) -> None:
        await self.manager.drain()

    # -- PresenceClient --------------------------------------------------------------

    async def handle(
        self, request: presence_pb2.HandleRequest, *, timeout: float | None = None
    ) -> presence_pb2.HandleReply:
        try:
            message = parse_message(request.message.raw)
        except ParseError as exc:
            raise InvalidArgument(f"unparsable SIP message: {exc}") from None
        if not isinstance(message, Request):
            raise InvalidArgument("a SIP request is required, got a response")
        spans = self.spans
        if not spans.enabled:  # tracing off: not even an attribute dictionary
            return await self._handle(request, message)
        attributes = {"sip.method": message.method, "sip.call_id": message.get("Call-ID") or ""}
        with spans.call("presence.handle", kind=SpanKind.SERVER, attributes=attributes) as span:
            answer = await self._handle(request, message)
            if span is not None:
                span.set_attribute("sip.status_code", answer.response.code)
            return answer

    async def _handle(
        self, request: presence_pb2.HandleRequest, message: Request
    ) -> presence_pb2.HandleReply:
        now = self.now()
        try:
            answer = await self._dispatch(request, message, now)
        except Reject as exc:
            answer = reply(message, exc.status, exc.reason, headers=exc.headers)
        except ParseError as exc:
            answer = reply(message, 400, f"Bad Request ({exc})"[:120])
        except StateError as exc:
            log.warning("presence state unavailable: %s", exc)
            answer = reply(message, 500, "Server Internal Error", headers=[("Retry-After", "5")])
        if self._requests is not None:
            self._requests.labels(message.method, str(answer.response.code)).inc()
        return answer

    async def _dispatch(
        self, request: presence_pb2.HandleRequest, message: Request, now: int
    ) -> presence_pb2.HandleReply:
        method = message.method
        if method == "PUBLISH":
            return await self.publish.handle(message, now)
        if method == "SUBSCRIBE":
            return await self.subscribe.handle(
                message, request.message.source, request.authenticated_user, now
            )
        if method == "MESSAGE":
            if not request.store_offline:
                raise Reject(404, "Not Found")
            return await self.msilo.store(message, now)
        if method == "NOTIFY" and event_package(message)[0] == "message-summary":
            # A voicemail server's unsolicited NOTIFY: the same as a PUBLISH of the state.
            if message.to.tag:
                raise Reject(481, "Subscription does not exist")
            user, domain = split_uri(message.uri)
            await self.store_state(
                "message-summary",
                presentity_uri(user, domain),
                message.body,
                message.get("Content-Type") or "",
                "notify-mwi",
                0,
                now,
            )
            return reply(message, 200)
        raise Reject(405, "Method Not Allowed", [("Allow", ALLOW)])

    async def deliver(
        self, request: presence_pb2.DeliverRequest, *, timeout: float | None = None
    ) -> presence_pb2.DeliverReply:
        accepted = 0
        for envelope in request.events:
            try:
                if await self._apply(envelope):
                    accepted += 1
            except BadBody as exc:
                raise InvalidArgument(exc.reason) from None
        return presence_pb2.DeliverReply(accepted=accepted)

    async def _apply(self, envelope: events_pb2.Envelope) -> bool:
        now = self.now()
        kind = envelope.WhichOneof("event")
        if kind == "presence":
            ev = envelope.presence
            await self.store_state(
                ev.event, ev.presentity, ev.body, ev.content_type, ev.etag, int(ev.expires_at), now
            )
            return True
        if kind in ("dialog", "transaction"):
            return await self.calls.on_envelope(envelope, now)
        if kind == "registration":
            reg = envelope.registration
            if reg.kind in (
                events_pb2.RegistrationEvent.KIND_ADDED,
                events_pb2.RegistrationEvent.KIND_REFRESHED,
            ):
                await self.msilo.deliver(reg.binding, now)
                return True
        return False

    async def store_state(
        self,
        event: str,
        uri: str,
        body: bytes,
        content_type: str,
        etag: str,
        expires_at: int,
        now: int,
    ) -> None:
        """State from outside SIP PUBLISH (admin API, MWI NOTIFY): kept under ``etag``."""
        package = self.packages.get(event)
        if package is None or not package.publishable:
            raise BadBody(489, f"unknown or unpublishable event package {event!r}")
        user, domain = split_uri(uri)
        etag = etag or "ext-" + event
        if not body:
            await self.store.delete_publication(user, domain, event, etag)
        else:
            package.validate(body, content_type or package.content_type)
            expires = expires_at if expires_at > now else now + self.config.max_expires
            await self.store.upsert_publication(
                Publication(user, domain, event, etag, expires, now, body, "external"),
                uuid.uuid4().hex,
            )
        await self.announce(event, presentity_uri(user, domain))

    async def refresh_watchers(self, uri: str) -> None:
        """After the watchers table changed for ``uri``: every instance re-decides."""
        await self.announce("presence", uri, policy=True)

    # -- bus -------------------------------------------------------------------------

    async def announce(self, event: str, uri: str, *, policy: bool = False) -> None:
        envelope = events_pb2.Envelope(
            id=uuid.uuid4().hex,
            time=self._clock(),
            instance=self.instance_id,
            service="presence",
            presence=events_pb2.PresenceEvent(event=event, presentity=uri),
        )
        if policy:
            envelope.presence.etag = "policy"
        try:
            await self._bus.publish(
                SUBJECT_PRESENCE + event.replace(".", "-"), envelope.SerializeToString()
            )
        except StateError as exc:
            # Without the bus at least this instance's watchers hear of it.
            log.warning("presence change not announced: %s", exc)
            await self.manager.on_change(event, uri, self.now())

    @staticmethod
    def _envelope(message: Message) -> events_pb2.Envelope | None:
        envelope = events_pb2.Envelope()
        try:
            envelope.ParseFromString(message.data)
        except Exception:  # a foreign payload is dropped, not fatal
            return None
        return envelope

    async def _on_change(self, message: Message) -> None:
        envelope = self._envelope(message)
        if envelope is None or envelope.service != "presence" or not envelope.HasField("presence"):
            return
        ev = envelope.presence
        now = self.now()
        if ev.etag == "policy":
            await self.manager.refresh_status(ev.presentity, self._decide, now)
            return
        await self.manager.on_change(ev.event, ev.presentity, now)

    async def _decide(self, sub: Subscription) -> int:
        _, domain = split_uri(sub.presentity_uri)
        own = (sub.watcher_user, sub.watcher_domain) == split_uri(sub.presentity_uri)
        decision = await self.policy.decide(
            sub.presentity_uri,
            domain,
            sub.watcher_user,
            sub.watcher_domain,
            sub.event,
            self.now(),
            own=own,
        )
        return decision.status

    async def _on_input(self, message: Message) -> None:
        envelope = self._envelope(message)
        if envelope is None or envelope.service == "presence" or not envelope.HasField("presence"):
            return
        try:
            await self._apply(envelope)
        except BadBody as exc:
            log.info("presence state from %s refused: %s", envelope.service, exc.reason)

    async def _on_call(self, message: Message) -> None:
        envelope = self._envelope(message)
        if envelope is not None:
            await self.calls.on_envelope(envelope, self.now())

    async def _on_registration(self, message: Message) -> None:
        envelope = self._envelope(message)
        if envelope is not None and envelope.HasField("registration"):
            await self._apply(envelope)


__all__ = ["PresenceService", "new_etag"]
