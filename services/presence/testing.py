"""Test helpers of the presence service (used by tests/presence): a recording
EdgeClient standing in for the edge, SIP requests from text, and a harness driving
one PresenceService instance."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2, presence_pb2
from sipmesh.presence.service import PresenceService
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.stateless import make_response
from sipmesh.state.clock import FakeClock

DOMAIN = "example.com"


@dataclass
class Sent:
    out: common_pb2.OutboundRequest
    request: Request


@dataclass
class RecordingEdge:
    """EdgeClient collaborator: records requests, answers ``status`` (or an outcome)."""

    status: int = 200
    outcome: int = edge_pb2.SendResult.OUTCOME_RESPONSE
    sent: list[Sent] = field(default_factory=list)
    # Per Request-URI override of the status (e.g. an unreachable contact).
    status_for: dict[str, int] = field(default_factory=dict)

    async def send(
        self, request: common_pb2.OutboundRequest, *, timeout: float | None = None
    ) -> edge_pb2.SendResult:
        parsed = parse_message(request.raw)
        assert isinstance(parsed, Request)
        self.sent.append(Sent(request, parsed))
        if self.outcome != edge_pb2.SendResult.OUTCOME_RESPONSE:
            return edge_pb2.SendResult(outcome=self.outcome)  # type: ignore[arg-type]
        status = self.status_for.get(parsed.uri, self.status)
        # The edge puts its Via on top before sending; the UA answers along both.
        copy = parse_message(request.raw)
        assert isinstance(copy, Request)
        copy.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKedge", first=True)
        response = make_response(copy, status)
        return edge_pb2.SendResult(
            outcome=edge_pb2.SendResult.OUTCOME_RESPONSE, status=status, response=bytes(response)
        )

    async def info(
        self, request: edge_pb2.EdgeInfoRequest, *, timeout: float | None = None
    ) -> edge_pb2.EdgeInfo:
        return edge_pb2.EdgeInfo(edge_id="edge-test")

    def notifies(self, uri: str | None = None) -> list[Request]:
        return [
            s.request
            for s in self.sent
            if s.request.method == "NOTIFY" and (uri is None or s.request.uri == uri)
        ]

    def messages(self) -> list[Request]:
        return [s.request for s in self.sent if s.request.method == "MESSAGE"]


_counter = itertools.count(1)


def source(edge_id: str = "edge-1", port: int = 5070) -> common_pb2.Source:
    return common_pb2.Source(
        remote=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host="127.0.0.1", port=port),
        local=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host="127.0.0.1", port=5060),
        socket="udp:127.0.0.1:5060",
        edge_id=edge_id,
        flow_id=f"flow-{port}",
    )


def sip(text: str) -> bytes:
    """A request from readable text: LF line ends become CRLF, Content-Length is added."""
    head, _, body = text.lstrip("\n").partition("\n\n")
    lines = [ln for ln in head.split("\n") if ln.strip()]
    payload = body.encode() if body else b""
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def pidf(entity: str, basic: str, note: str = "", tuple_id: str = "t1") -> str:
    extra = (
        f"<dm:person id='p1'><rpid:activities><rpid:{note}/></rpid:activities></dm:person>"
        if note
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
        f'entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple>{extra}'
        "</presence>"
    )


class Harness:
    """One presence instance plus helpers to drive it with SIP text."""

    def __init__(self, service: PresenceService, edge: RecordingEdge, clock: FakeClock) -> None:
        self.service = service
        self.edge = edge
        self.clock = clock

    async def request(
        self, raw: bytes, *, store_offline: bool = False, src: common_pb2.Source | None = None
    ) -> Response:
        reply = await self.service.handle(
            presence_pb2.HandleRequest(
                message=common_pb2.SipMessage(raw=raw, source=src or source()),
                store_offline=store_offline,
            )
        )
        parsed = parse_message(reply.response.raw)
        assert isinstance(parsed, Response)
        assert parsed.status == reply.response.code
        return parsed

    async def publish(
        self,
        user: str,
        body: str = "",
        *,
        etag: str = "",
        expires: int | None = 3600,
        event: str = "presence",
        ctype: str = "application/pidf+xml",
    ) -> Response:
        n = next(_counter)
        headers = [
            f"PUBLISH sip:{user}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKp{n}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{DOMAIN}>;tag=pf{n}",
            f"To: <sip:{user}@{DOMAIN}>",
            f"Call-ID: pub{n}@test",
            f"CSeq: {n} PUBLISH",
            f"Event: {event}",
        ]
        if expires is not None:
            headers.append(f"Expires: {expires}")
        if etag:
            headers.append(f"SIP-If-Match: {etag}")
        if body:
            headers.append(f"Content-Type: {ctype}")
        return await self.request(sip("\n".join(headers) + "\n\n" + body))

    async def subscribe(
        self,
        watcher: str,
        target: str,
        *,
        event: str = "presence",
        expires: int | None = 600,
        call_id: str = "",
        from_tag: str = "",
        to_tag: str = "",
        cseq: int = 1,
        port: int = 5080,
        extra: str = "",
    ) -> Response:
        n = next(_counter)
        lines = [
            f"SUBSCRIBE sip:{target}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKs{n}",
            "Max-Forwards: 70",
            f"From: <sip:{watcher}@{DOMAIN}>;tag={from_tag or f'wf{n}'}",
            f"To: <sip:{target}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or f'sub{n}@test'}",
            f"CSeq: {cseq} SUBSCRIBE",
            f"Contact: <sip:{watcher}@127.0.0.1:{port}>",
            f"Event: {event}",
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if extra:
            lines.append(extra)
        return await self.request(sip("\n".join(lines)), src=source(port=port))

    async def settle(self, predicate: Callable[[], bool], limit: float = 5.0) -> None:
        """Wait (bounded) until background NOTIFYs and bus deliveries satisfied ``predicate``."""
        async with asyncio.timeout(limit):
            while True:
                await self.service.drain()
                if predicate():
                    return
                await asyncio.sleep(0.01)


MakeHarness = Callable[..., Awaitable[Harness]]
