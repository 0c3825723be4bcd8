"""Helpers for tests that drive the router (this suite's and end-to-end ones).

``MiniRegistrar`` is a minimal implementation of the RegistrarClient Protocol, used
by the router tests until the registrar service exposes it: real digest challenges
and verification (sipmesh.sip.digest), bindings in a dict. ``sip_request`` and
``route_request`` build what the edge would send; ``answer_challenge`` is a UA's
digest answer.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from sipmesh.gen.sipmesh.v1 import common_pb2, registrar_pb2, router_pb2
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.digest import DigestCredentials, build_credentials, check_authorization
from sipmesh.sip.digest_nonce import NonceFactory
from sipmesh.sip.fields import Contact, format_auth_params, parse_auth_params
from sipmesh.sip.stateless import make_response

DOMAIN = "example.com"
_Auth = registrar_pb2.AuthenticateReply
_Mode = registrar_pb2.AuthenticateRequest


@dataclass
class MiniRegistrar:
    subscribers: dict[tuple[str, str], str] = field(default_factory=dict)
    bindings: dict[str, list[common_pb2.Binding]] = field(default_factory=dict)
    nonces: NonceFactory = field(default_factory=lambda: NonceFactory(b"test-secret", 300))
    calls: list[str] = field(default_factory=list)

    def _challenge(self, request: Request, realm: str, proxy: bool) -> registrar_pb2.SipResponse:
        ch = self.nonces.challenge(realm, time.time())
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        code = 407 if proxy else 401
        resp = make_response(request, code, headers=[(name, ch.to_header())])
        return registrar_pb2.SipResponse(code=code, reason=resp.reason, raw=bytes(resp))

    def _check(
        self, request: Request, realm: str, proxy: bool, flags: int
    ) -> tuple[_Auth.Result.ValueType, str, registrar_pb2.SipResponse | None]:
        header = "Proxy-Authorization" if proxy else "Authorization"
        for value in request.get_instances(header):
            _, params = parse_auth_params(value)
            creds = DigestCredentials.from_params(params)
            if creds.realm != realm:
                continue
            password = self.subscribers.get((creds.username, realm))
            if password is None:
                break
            result = check_authorization(
                creds, request.method, time.time(), self.nonces, realm=realm, password=password
            )
            if not result.ok:
                break
            owner = request.to if request.method == "REGISTER" else request.from_
            if flags & 1 and getattr(owner.uri, "user", None) != creds.username:
                resp = make_response(request, 403, "Forbidden")
                return (
                    _Auth.RESULT_FORBIDDEN,
                    "",
                    registrar_pb2.SipResponse(code=403, reason="Forbidden", raw=bytes(resp)),
                )
            return _Auth.RESULT_OK, creds.username, None
        return _Auth.RESULT_CHALLENGE, "", self._challenge(request, realm, proxy)

    async def authenticate(
        self,
        request: registrar_pb2.AuthenticateRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.AuthenticateReply:
        self.calls.append("authenticate")
        msg = parse_message(request.message.raw)
        assert isinstance(msg, Request)
        proxy = request.mode == _Mode.MODE_PROXY or (
            request.mode == _Mode.MODE_UNSPECIFIED and msg.method != "REGISTER"
        )
        realm = request.realm or str(getattr(msg.from_.uri, "host", ""))
        result, user, response = self._check(msg, realm, proxy, request.flags)
        reply = _Auth(result=result, user=user, domain=realm)
        if response is not None:
            reply.response.CopyFrom(response)
        if result == _Auth.RESULT_OK and request.consume_credentials:
            reply.edits.append(
                common_pb2.HeaderEdit(
                    op=common_pb2.HeaderEdit.OP_REMOVE,
                    name="Proxy-Authorization" if proxy else "Authorization",
                )
            )
        return reply

    async def register(
        self,
        request: registrar_pb2.RegisterRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.RegisterReply:
        self.calls.append("register")
        msg = parse_message(request.message.raw)
        assert isinstance(msg, Request)
        realm = request.realm or str(getattr(msg.to.uri, "host", ""))
        user = ""
        if request.authenticate:
            result, user, response = self._check(msg, realm, False, 1)
            if result != _Auth.RESULT_OK:
                assert response is not None
                return registrar_pb2.RegisterReply(response=response)
        aor = f"{getattr(msg.to.uri, 'user', '')}@{getattr(msg.to.uri, 'host', '')}"
        source = request.message.source.remote
        for value in msg.get_all("contact"):
            contact = Contact.parse(value)
            binding = common_pb2.Binding(
                aor=aor, contact=str(contact.uri), call_id=msg.call_id, cseq=msg.cseq.seq
            )
            if request.fix_nated:
                binding.received = f"sip:{source.host}:{source.port}"
            self.bindings.setdefault(aor, []).append(binding)
        contacts = [("Contact", f"<{b.contact}>;expires=3600") for b in self.bindings.get(aor, [])]
        resp = make_response(msg, 200, "OK", headers=contacts)
        return registrar_pb2.RegisterReply(
            response=registrar_pb2.SipResponse(code=200, reason="OK", raw=bytes(resp)),
            bindings=self.bindings.get(aor, []),
            authenticated_user=user,
            aor=aor,
        )

    async def lookup(
        self,
        request: registrar_pb2.LookupRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.LookupReply:
        self.calls.append("lookup")
        aor = request.aor.removeprefix("sip:").split(";", 1)[0]
        found = self.bindings.get(aor, [])
        result = (
            registrar_pb2.LookupReply.RESULT_FOUND
            if found
            else registrar_pb2.LookupReply.RESULT_NOT_FOUND
        )
        return registrar_pb2.LookupReply(result=result, bindings=found, aor=aor)

    async def is_registered(
        self,
        request: registrar_pb2.IsRegisteredRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.IsRegisteredReply:
        return registrar_pb2.IsRegisteredReply(registered=bool(self.bindings.get(request.aor)))

    async def show_location(
        self,
        request: registrar_pb2.ShowLocationRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.ShowLocationReply:
        raise NotImplementedError

    async def remove_location(
        self,
        request: registrar_pb2.RemoveLocationRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.RemoveLocationReply:
        raise NotImplementedError

    async def add_location(
        self,
        request: registrar_pb2.AddLocationRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the RegistrarClient contract
    ) -> registrar_pb2.AddLocationReply:
        raise NotImplementedError


def sip_request(
    method: str,
    ruri: str,
    *,
    from_uri: str = f"sip:alice@{DOMAIN}",
    to_uri: str | None = None,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    call_id: str | None = None,
    cseq: int = 1,
) -> Request:
    to_value = f"<{to_uri or ruri}>" + (f";tag={to_tag}" if to_tag else "")
    hdrs = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{secrets.token_hex(6)}"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={secrets.token_hex(4)}"),
        ("To", to_value),
        ("Call-ID", call_id or secrets.token_hex(8)),
        ("CSeq", f"{cseq} {method}"),
        *(headers or []),
        ("Content-Length", str(len(body))),
    ]
    return Request(method, ruri, hdrs, body)


def route_request(
    msg: Request,
    *,
    kind: router_pb2.RouteKind.ValueType = router_pb2.ROUTE_KIND_REQUEST,
    context: bytes = b"",
    handler: str = "",
    reply_status: int = 0,
    reply: Response | None = None,
    src: tuple[str, int] = ("192.0.2.10", 5060),
    nat: bool = False,
) -> router_pb2.RouteRequest:
    source = common_pb2.Source(
        remote=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host=src[0], port=src[1]),
        local=common_pb2.Address(
            transport=common_pb2.TRANSPORT_UDP, host="198.51.100.1", port=5060
        ),
        nat_detected=nat,
    )
    return router_pb2.RouteRequest(
        kind=kind,
        message=common_pb2.SipMessage(raw=bytes(msg), source=source),
        context=context,
        handler=handler,
        reply_status=reply_status,
        reply=bytes(reply) if reply is not None else b"",
    )


def answer_challenge(msg: Request, challenge_raw: bytes, user: str, password: str) -> Request:
    """``msg`` again with credentials for the challenge in ``challenge_raw``."""
    from sipmesh.sip.digest import DigestChallenge

    resp = parse_message(challenge_raw)
    assert isinstance(resp, Response)
    name = "Proxy-Authenticate" if resp.status == 407 else "WWW-Authenticate"
    header = resp.get(name)
    assert header is not None
    ch = DigestChallenge.parse(header)
    creds = build_credentials(ch, username=user, password=password, method=msg.method, uri=msg.uri)
    auth_name = "Proxy-Authorization" if resp.status == 407 else "Authorization"
    out = Request(msg.method, msg.uri, msg.headers, msg.body)
    out.add(auth_name, format_auth_params("Digest", creds.to_params()))
    return out
