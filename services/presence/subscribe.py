"""SUBSCRIBE (RFC 6665 §4.2.1), Kamailio's handle_subscribe.

An initial SUBSCRIBE creates a subscription dialog in which we are the notifier:
our To tag, our Contact (``server_address`` or the listener it came in on), the
subscriber's Contact as remote target and its Record-Route as route set (RFC 3261
§12.1.1). The answer is 200 (active) or 202 (pending authorisation), and the first
NOTIFY with the current state follows at once (§4.2.1.2). Expires: 0 on a new
subscription is a fetch: one NOTIFY with the state and "terminated" (§4.4.3).

In-dialog: a refresh (new Expires, possibly a new Contact and flow) or an
unsubscribe (Expires: 0, final NOTIFY). An unknown dialog gets 481 (§4.2.1.2).

Forking and retries: the To tag is derived from the request (RFC 3261 §8.2.6.2), and
the dialog is unique in the table, so the same initial SUBSCRIBE handled twice (a
retry through another instance) yields one subscription, answered the same way.
"""

from __future__ import annotations

from sipmesh.gen.sipmesh.v1 import common_pb2, presence_pb2
from sipmesh.presence.model import (
    ACTIVE,
    PENDING,
    TERMINATED,
    Flow,
    Subscription,
    presentity_uri,
    split_uri,
)
from sipmesh.presence.policy import Policy
from sipmesh.presence.publish import PublishHandler
from sipmesh.presence.replies import Reject, check_interval, parse_expires, reply
from sipmesh.presence.store import PresenceStore
from sipmesh.presence.subscriptions import Announce, SubscriptionManager
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.sip import ParseError, Request
from sipmesh.sip.stateless import stateless_to_tag

_TRANSPORTS = {
    common_pb2.TRANSPORT_UDP: "udp",
    common_pb2.TRANSPORT_TCP: "tcp",
    common_pb2.TRANSPORT_TLS: "tls",
    common_pb2.TRANSPORT_WS: "ws",
    common_pb2.TRANSPORT_WSS: "wss",
    common_pb2.TRANSPORT_SCTP: "sctp",
}


def flow_from_source(source: common_pb2.Source) -> Flow:
    return Flow(
        edge_id=source.edge_id,
        flow_id=source.flow_id,
        flow_token=source.flow_token,
        transport=int(source.remote.transport),
        host=source.remote.host,
        port=source.remote.port,
    )


def local_contact(configured: str, source: common_pb2.Source, fallback_host: str) -> str:
    if configured:
        return configured
    local = source.local
    host = local.host if local.host and local.host not in ("0.0.0.0", "::") else fallback_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = f":{local.port}" if local.port else ""
    transport = _TRANSPORTS.get(local.transport, "udp")
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{host}{port}{suffix}"


class SubscribeHandler:
    def __init__(
        self,
        config: PresenceConfig,
        store: PresenceStore,
        publish: PublishHandler,
        policy: Policy,
        manager: SubscriptionManager,
        announce: Announce,
    ) -> None:
        self._config = config
        self._store = store
        self._publish = publish
        self._policy = policy
        self._manager = manager
        self._announce = announce

    @property
    def _delay(self) -> float:
        return self._config.initial_notify_delay_ms / 1000

    async def handle(
        self, request: Request, source: common_pb2.Source, auth_user: str, now: int
    ) -> presence_pb2.HandleReply:
        package = self._publish.package(request, publish=False)
        expires = check_interval(
            parse_expires(request, self._config.default_expires),
            self._config.min_expires,
            self._config.max_expires,
        )
        try:
            to_tag = request.to.tag
            from_tag = request.from_.tag or ""
            contacts = request.contacts
        except ParseError:
            raise Reject(400, "Bad Request") from None
        if to_tag:
            return await self._in_dialog(
                request, source, package.name, to_tag, from_tag, expires, now
            )
        if len(contacts) != 1 or contacts[0].is_star:
            raise Reject(400, "Missing Contact")
        user, domain = split_uri(request.uri)
        w_user, w_domain = split_uri(str(request.from_.uri))
        t_user, t_domain = split_uri(str(request.to.uri))
        uri = presentity_uri(user, domain)
        own = (w_user, w_domain) == (user, domain)
        if package.name == "presence.winfo" and not own:
            # RFC 3857 §5.1: only the presentity may see who watches it.
            raise Reject(403, "Forbidden")
        decision = await self._policy.decide(
            uri, domain, w_user, w_domain, package.name, now, own=own
        )
        if decision.status == TERMINATED:
            raise Reject(403, "Forbidden")
        tag = stateless_to_tag(request)
        sub = Subscription(
            presentity_uri=uri,
            event=package.name,
            event_id=_event_id(request),
            watcher_user=w_user,
            watcher_domain=w_domain,
            to_user=t_user or user,
            to_domain=t_domain or domain,
            from_user=w_user,
            from_domain=w_domain,
            callid=request.call_id,
            to_tag=tag,
            from_tag=from_tag,
            local_cseq=0,
            remote_cseq=request.cseq.seq,
            contact=str(contacts[0].uri),
            route_set=[str(r) for r in request.record_routes],
            expires=now + expires,
            status=decision.status,
            reason=decision.reason,
            version=0,
            socket_info=source.socket,
            local_contact=local_contact(self._config.server_address, source, domain),
            user_agent=request.user_agent or "",
            flow=flow_from_source(source),
        )
        status = 202 if sub.status == PENDING else 200
        headers = [("Contact", f"<{sub.local_contact}>"), ("Expires", str(expires))]
        if expires == 0:
            # Fetch (§4.4.3): the state once, no subscription kept.
            self._manager.schedule(sub, now, self._delay, terminate="timeout")
            return reply(request, status, headers=headers, to_tag=tag)
        if not await self._store.insert_subscription(sub, now):
            existing = await self._store.get_subscription(sub.callid, tag, from_tag)
            if existing is not None:
                sub = self._manager.owned.get(existing.key, existing)
                sub.flow = flow_from_source(source)
        await self._manager.take(sub, now)
        self._manager.schedule(sub, now, self._delay)
        if package.name == "presence":
            await self._announce("presence.winfo", uri)
        return reply(request, status, headers=headers, to_tag=tag)

    async def _in_dialog(
        self,
        request: Request,
        source: common_pb2.Source,
        event: str,
        to_tag: str,
        from_tag: str,
        expires: int,
        now: int,
    ) -> presence_pb2.HandleReply:
        stored = await self._store.get_subscription(request.call_id, to_tag, from_tag)
        if stored is None or stored.event != event:
            raise Reject(481, "Subscription does not exist")
        sub = self._manager.owned.get(stored.key)
        if sub is None:
            sub = stored
        elif sub.local_cseq < stored.local_cseq:
            sub.local_cseq = stored.local_cseq  # another instance sent NOTIFYs meanwhile
        cseq = request.cseq.seq
        if cseq < sub.remote_cseq:
            # RFC 3261 §12.2.2: a lower CSeq than the last one is out of order.
            raise Reject(500, "CSeq out of order")
        sub.remote_cseq = cseq
        contacts = request.contacts
        if contacts and not contacts[0].is_star:
            sub.contact = str(contacts[0].uri)  # target refresh (RFC 6665 §4.1.2.1)
        sub.flow = flow_from_source(source)
        sub.socket_info = source.socket
        headers = [("Contact", f"<{sub.local_contact}>"), ("Expires", str(expires))]
        status = 202 if sub.status == PENDING else 200
        if expires == 0:
            # Unsubscribe (§4.2.1.4): a final NOTIFY, then the dialog is gone.
            sub.expires = now
            await self._manager.take(sub, now)
            self._manager.schedule(sub, now, self._delay, terminate="timeout")
            return reply(request, status, headers=headers)
        sub.expires = now + expires
        await self._store.update_subscription(sub, now)
        await self._manager.take(sub, now)
        self._manager.schedule(sub, now, self._delay)
        return reply(request, status, headers=headers)


def _event_id(request: Request) -> str:
    value = request.get("Event") or ""
    for param in value.split(";")[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "id":
            return val.strip()
    return ""


__all__ = ["ACTIVE", "SubscribeHandler", "flow_from_source", "local_contact"]
