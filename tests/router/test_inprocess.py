"""The in-process side channel: route_parsed / register_parsed (no re-parse).

In one process the edge hands the router the Request it parsed and the router
hands the registrar its own; the registrar's response comes back as an object.
The decisions must equal those of the protobuf-only path (what gRPC carries).
"""

from __future__ import annotations

from typing import Any

from sipmesh.clients.interfaces import LocalRegistrar, LocalRouter, RegistrarClient
from sipmesh.gen.sipmesh.v1 import registrar_pb2
from sipmesh.registrar.api import Registrar
from sipmesh.router.testing import DOMAIN, answer_challenge, route_request, sip_request
from sipmesh.sip import Request, Response, parse_message


class _RemoteLike:
    """The registrar seen through its client Protocol only (like the gRPC client)."""

    def __init__(self, inner: Registrar) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "register_parsed":
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def register(
        self, request: registrar_pb2.RegisterRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RegisterReply:
        return await self._inner.register(request, timeout=timeout)


def _register_msg(user: str, contact: str) -> Request:
    return sip_request(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_uri=f"sip:{user}@{DOMAIN}",
        to_uri=f"sip:{user}@{DOMAIN}",
        headers=[("Contact", f"<{contact}>")],
    )


async def test_route_parsed_matches_route_and_hands_back_the_response(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router()
    # The in-process objects offer the side channel (checked without narrowing).
    assert all(isinstance(o, p) for o, p in ((router, LocalRouter), (registrar, LocalRegistrar)))
    msg = _register_msg("bob", "sip:bob@192.0.2.20:5062")
    before = bytes(msg)
    first, reply = await router.route_parsed(route_request(msg), msg)
    assert bytes(msg) == before  # the router worked on a copy
    assert isinstance(reply, Response)
    assert reply.status == 401
    assert bytes(reply) == first.reply.raw
    again = answer_challenge(msg, first.reply.raw, "bob", "bobpw")
    second, ok = await router.route_parsed(route_request(again), again)
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert bytes(ok) == second.reply.raw
    assert "<sip:bob@192.0.2.20:5062>" in (ok.get("Contact") or "")
    # The bytes-only path (what gRPC carries) answers the same way.
    other = _register_msg("bob", "sip:bob@192.0.2.20:5062")
    challenged = await router.route(route_request(other))
    answered = answer_challenge(other, challenged.reply.raw, "bob", "bobpw")
    plain = parse_message((await router.route(route_request(answered))).reply.raw)
    assert isinstance(plain, Response)
    assert (plain.status, plain.get("Contact")) == (200, ok.get("Contact"))
    found = await registrar.lookup(registrar_pb2.LookupRequest(aor=f"sip:bob@{DOMAIN}"))
    assert [b.contact for b in found.bindings] == ["sip:bob@192.0.2.20:5062"]


async def test_registrar_without_side_channel_gives_bytes_only(
    make_router: Any, registrar: Registrar
) -> None:
    remote = _RemoteLike(registrar)
    assert isinstance(remote, RegistrarClient)
    assert not any(isinstance(remote, p) for p in (LocalRegistrar,))
    router = await make_router()
    router.env.registrar = remote
    msg = _register_msg("alice", "sip:alice@192.0.2.30:5060")
    first, reply = await router.route_parsed(route_request(msg), msg)
    assert reply is None
    again = answer_challenge(msg, first.reply.raw, "alice", "alicepw")
    second, reply = await router.route_parsed(route_request(again), again)
    assert reply is None
    parsed = parse_message(second.reply.raw)
    assert isinstance(parsed, Response)
    assert parsed.status == 200


async def test_register_parsed_equals_register(registrar: Registrar) -> None:
    msg = _register_msg("bob", "sip:bob@192.0.2.21:5062")
    request = registrar_pb2.RegisterRequest(
        message=route_request(msg).message, authenticated_user=f"bob@{DOMAIN}"
    )
    reply, response = await registrar.register_parsed(request, msg)
    assert response.status == 200
    assert bytes(response) == reply.response.raw
    assert [b.contact for b in reply.bindings] == ["sip:bob@192.0.2.21:5062"]
    plain = await registrar.register(request)
    assert plain.response.code == 200
    assert [b.contact for b in plain.bindings] == ["sip:bob@192.0.2.21:5062"]
