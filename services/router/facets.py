"""The parts of ``ctx`` that ask other services: auth, registrar, presence, media.

Each call goes through the typed client of sipmesh/clients (the service object
in-process, a batched gRPC stream when split). A service that cannot be reached
never leaves the caller without an answer: the facet reports it and the script
answers (the default script with 500/503/480, see its routes).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from sipmesh.clients.errors import ServiceError
from sipmesh.clients.interfaces import LocalRegistrar
from sipmesh.gen.sipmesh.v1 import common_pb2, presence_pb2, registrar_pb2, router_pb2
from sipmesh.router.targets import Target
from sipmesh.sip import Response
from sipmesh.state.errors import StateError

if TYPE_CHECKING:
    from sipmesh.router.api import Ctx
    from sipmesh.router.env import RouterEnv

log = logging.getLogger("sipmesh.router")

_AuthResult = registrar_pb2.AuthenticateReply.Result
_Lookup = registrar_pb2.LookupReply.Result
# Marks a request relayed by a peer region's router (multi-region, _lookup_remote).
REGION_HEADER = "X-Sipmesh-Region"


@dataclass
class AuthOutcome:
    """The result of ``ctx.auth.check``: ``ok``, or why not (``result``)."""

    result: str  # ok, challenge, forbidden, locked_out, error, unavailable
    user: str = ""
    domain: str = ""
    response: registrar_pb2.SipResponse | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


_RESULT_NAMES = {
    _AuthResult.RESULT_OK: "ok",
    _AuthResult.RESULT_CHALLENGE: "challenge",
    _AuthResult.RESULT_FORBIDDEN: "forbidden",
    _AuthResult.RESULT_LOCKED_OUT: "locked_out",
    _AuthResult.RESULT_ERROR: "error",
}


def _sip_message(ctx: Ctx) -> common_pb2.SipMessage:
    return ctx._req.message


class AuthFacet:
    """auth_check / auth_challenge / consume_credentials (via the registrar)."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env
        self._last: AuthOutcome | None = None
        self._consume: list[common_pb2.HeaderEdit] = []

    async def check(
        self, realm: str = "", *, flags: int = 1, proxy: bool | None = None
    ) -> AuthOutcome:
        """auth_check(realm, "subscriber", flags): digest credentials of the request.

        ``realm`` defaults to the From domain (the To domain for REGISTER); ``flags``
        1 requires the authenticated user to be the From/To user. ``proxy`` selects
        407/Proxy-Authorization (default: every method but REGISTER).
        """
        mode = registrar_pb2.AuthenticateRequest.MODE_UNSPECIFIED
        if proxy is not None:
            mode = (
                registrar_pb2.AuthenticateRequest.MODE_PROXY
                if proxy
                else registrar_pb2.AuthenticateRequest.MODE_WWW
            )
        registrar = self._env.registrar
        if registrar is None:
            outcome = AuthOutcome("unavailable")
        else:
            try:
                reply = await registrar.authenticate(
                    registrar_pb2.AuthenticateRequest(
                        message=_sip_message(self._ctx),
                        realm=realm,
                        mode=mode,
                        flags=flags,
                        consume_credentials=True,
                    ),
                    timeout=self._env.call_timeout,
                )
            except ServiceError as exc:
                log.debug("auth: registrar unavailable: %s", exc)
                outcome = AuthOutcome("unavailable")
            else:
                outcome = AuthOutcome(
                    _RESULT_NAMES.get(reply.result, "error"),
                    reply.user,
                    reply.domain,
                    reply.response if reply.HasField("response") else None,
                )
                self._consume = list(reply.edits)
                if outcome.ok:
                    self._ctx._set_auth_user(reply.user)
        self._last = outcome
        return outcome

    def challenge(self) -> None:
        """auth_challenge: answer with the registrar's 401/407 (or 403/400) response.

        Without a reachable registrar no nonce can be issued: 503 with Retry-After.
        """
        last = self._last
        if last is None or last.ok:
            raise RuntimeError("ctx.auth.challenge() needs a failed ctx.auth.check() first")
        if last.response is not None and last.response.raw:
            self._ctx.reply_raw(last.response.raw, last.response.code, last.response.reason)
        else:
            self._ctx.reply(503, "Service Unavailable", [("Retry-After", "5")])

    def consume(self) -> None:
        """consume_credentials: strip our credentials before forwarding."""
        self._ctx.add_edits(self._consume)
        self._consume = []


@dataclass
class LookupOutcome:
    """lookup("location"): ``code`` as Kamailio's: 1 found, -1 none, -2 method, -3 error."""

    code: int
    targets: list[Target] = field(default_factory=list)
    aor: str = ""

    @property
    def found(self) -> bool:
        return self.code > 0


class RegistrarFacet:
    """save("location") and lookup("location")."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env

    async def save(
        self,
        table: str = "location",
        *,
        flags: int = 0,
        authenticate: bool = False,
        realm: str = "",
        fix_nated: bool = False,
    ) -> registrar_pb2.RegisterReply | None:
        """Process the REGISTER and reply with the registrar's response.

        ``authenticate=True`` lets the registrar check the digest in the same call
        (one round trip for auth_check + save). None (after a 500 reply) when the
        registrar cannot be reached.
        """
        registrar = self._env.registrar
        if registrar is None:
            self._ctx.reply(500, "Server Internal Error")
            return None
        request = registrar_pb2.RegisterRequest(
            message=_sip_message(self._ctx),
            authenticate=authenticate,
            realm=realm,
            authenticated_user=self._ctx.auth_user,
            table="" if table == "location" else table,
            flags=flags,
            fix_nated=fix_nated,
        )
        response: Response | None = None
        try:
            if self._env.registrar_is_local():
                # One process: hand over the parsed REGISTER (ctx.msg is the parse of
                # message.raw; the script edits the decision, never ctx.msg) and take
                # the response back as an object.
                reply, response = await cast(LocalRegistrar, registrar).register_parsed(
                    request, self._ctx.msg, timeout=self._env.call_timeout
                )
            else:
                reply = await registrar.register(request, timeout=self._env.call_timeout)
        except ServiceError as exc:
            log.debug("save: registrar unavailable: %s", exc)
            self._ctx.reply(503, "Service Unavailable", [("Retry-After", "5")])
            return None
        if reply.authenticated_user:
            self._ctx._set_auth_user(reply.authenticated_user)
        if not flags & 0x01:
            r = reply.response
            self._ctx.reply_raw(r.raw, r.code, r.reason, message=response)
        return reply

    async def lookup(
        self, table: str = "location", *, aor: str = "", resolve_aliases: bool = False
    ) -> LookupOutcome:
        """The contacts of the R-URI's AOR: sets $ru to the first and the rest as branches."""
        registrar = self._env.registrar
        if registrar is None:
            return LookupOutcome(-3)
        try:
            reply = await registrar.lookup(
                registrar_pb2.LookupRequest(
                    aor=aor or self._ctx.ruri,
                    table="" if table == "location" else table,
                    method=self._ctx.method,
                    resolve_aliases=resolve_aliases,
                ),
                timeout=self._env.call_timeout,
            )
        except ServiceError as exc:
            log.debug("lookup: registrar unavailable: %s", exc)
            return LookupOutcome(-3)
        if reply.result == _Lookup.RESULT_METHOD_NOT_ALLOWED:
            return LookupOutcome(-2, aor=reply.aor)
        if reply.result != _Lookup.RESULT_FOUND or not reply.bindings:
            return await self._lookup_remote(reply.aor)
        targets = [Target.from_binding(b) for b in reply.bindings]
        self._ctx.clear_branches()
        for t in targets:
            self._ctx.append_branch(t)
        self._ctx.set_ruri(targets[0].uri)
        return LookupOutcome(1, targets, reply.aor)

    async def _lookup_remote(self, aor: str) -> LookupOutcome:
        """Multi-region: relay to the home region of a user registered in a peer region.

        The R-URI stays the AOR (the home region looks the user up itself); the
        home region's address becomes the next hop ($du), and the request carries
        REGION_HEADER so the home region never sends it on to a third region (no
        ping-pong between stale index entries). docs/deployment.md, "Multi-region".
        """
        index = self._env.regions
        if index is None or not aor or self._ctx.hdr(REGION_HEADER) is not None:
            return LookupOutcome(-1, aor=aor)
        try:
            async with asyncio.timeout(self._env.call_timeout):
                home = await index.lookup(aor)
        except (TimeoutError, StateError) as exc:
            log.debug("lookup: remote index unavailable: %s", exc)
            return LookupOutcome(-1, aor=aor)
        if home is None or home.region == self._env.region:
            return LookupOutcome(-1, aor=aor)
        target = Target(self._ctx.ruri, dst_uri=home.address)
        self._ctx.clear_branches()
        self._ctx.append_branch(target)
        self._ctx.append_hf(REGION_HEADER, self._env.region or "peer")
        return LookupOutcome(1, [target], aor)


class PresenceFacet:
    """handle_publish / handle_subscribe (and msilo's MESSAGE store) via presence."""

    def __init__(self, ctx: Ctx, env: RouterEnv) -> None:
        self._ctx = ctx
        self._env = env

    @property
    def available(self) -> bool:
        return self._env.presence is not None

    async def handle(self, *, store_offline: bool = False) -> bool:
        """Hand the request to presence and reply with its answer; False if unreachable."""
        presence = self._env.presence
        if presence is None:
            return False
        try:
            reply = await presence.handle(
                presence_pb2.HandleRequest(
                    message=_sip_message(self._ctx),
                    authenticated_user=self._ctx.auth_user,
                    store_offline=store_offline,
                ),
                timeout=self._env.call_timeout,
            )
        except ServiceError as exc:
            log.debug("presence unavailable: %s", exc)
            return False
        r = reply.response
        self._ctx.reply_raw(r.raw, r.code, r.reason)
        sender = self._env.outbound
        if sender is not None:
            for request in reply.requests:
                # NOTIFYs go out after the response is decided, without holding it.
                task = asyncio.ensure_future(sender(request))
                self._env.background.add(task)
                task.add_done_callback(self._env.background.discard)
        return True


class MediaFacet:
    """NATMANAGE: media relay operations the edge carries out on SDP bodies."""

    _Kind = router_pb2.MediaOp.Kind

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    def _op(
        self, kind: router_pb2.MediaOp.Kind.ValueType, flags: tuple[str, ...], relay: str
    ) -> None:
        self._ctx.add_media_op(router_pb2.MediaOp(kind=kind, flags=list(flags), relay=relay))

    def manage(self, *flags: str, relay: str = "") -> None:
        """rtpengine_manage: offer on requests, answer on replies, delete on failure/BYE."""
        self._op(router_pb2.MediaOp.KIND_MANAGE, flags, relay)

    def offer(self, *flags: str, relay: str = "") -> None:
        self._op(router_pb2.MediaOp.KIND_OFFER, flags, relay)

    def answer(self, *flags: str, relay: str = "") -> None:
        self._op(router_pb2.MediaOp.KIND_ANSWER, flags, relay)

    def delete(self, relay: str = "") -> None:
        self._op(router_pb2.MediaOp.KIND_DELETE, (), relay)
