"""The registrar contract (sipmesh.clients.interfaces.RegistrarClient) on the service.

In one process the router awaits these methods directly; split, the gRPC adapter of
sipmesh.clients.grpc_servers serves the same object. Messages are the generated
protobufs of proto/sipmesh/v1/registrar.proto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from opentelemetry.trace import SpanKind

from sipmesh.clients.errors import InvalidArgument, NotFound, Unavailable
from sipmesh.gen.sipmesh.v1 import common_pb2, registrar_pb2
from sipmesh.observe.spans import Spans
from sipmesh.registrar.aor import AorError
from sipmesh.registrar.auth import AuthResult
from sipmesh.registrar.convert import binding_from_pb, binding_to_pb, facts_from_pb
from sipmesh.registrar.core import ChangeKind
from sipmesh.registrar.service import RegistrarService
from sipmesh.sip.errors import ParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.state.errors import StateError

T = TypeVar("T")

_CHANGE_PB = {
    ChangeKind.ADDED: registrar_pb2.RegistrationChange.KIND_ADDED,
    ChangeKind.REFRESHED: registrar_pb2.RegistrationChange.KIND_REFRESHED,
    ChangeKind.REMOVED: registrar_pb2.RegistrationChange.KIND_REMOVED,
    ChangeKind.EXPIRED: registrar_pb2.RegistrationChange.KIND_EXPIRED,
}
_AUTH_PB = {
    AuthResult.OK: registrar_pb2.AuthenticateReply.RESULT_OK,
    AuthResult.CHALLENGE: registrar_pb2.AuthenticateReply.RESULT_CHALLENGE,
    AuthResult.FORBIDDEN: registrar_pb2.AuthenticateReply.RESULT_FORBIDDEN,
    AuthResult.LOCKED_OUT: registrar_pb2.AuthenticateReply.RESULT_LOCKED_OUT,
    AuthResult.ERROR: registrar_pb2.AuthenticateReply.RESULT_ERROR,
}


def sip_response(response: Response) -> registrar_pb2.SipResponse:
    return registrar_pb2.SipResponse(
        code=response.status,
        reason=response.reason,
        headers=[common_pb2.Header(name=n, value=v) for n, v in response.headers],
        raw=bytes(response),
    )


def _request(message: common_pb2.SipMessage) -> Request:
    try:
        # Validated by the edge before routing; To/Contact are parsed on access.
        parsed = parse_message(message.raw, lazy=True)
    except ParseError as exc:
        raise InvalidArgument(f"unparsable SIP message: {exc}") from None
    if not isinstance(parsed, Request):
        raise InvalidArgument("a SIP request is required, got a response")
    return parsed


async def _bounded(work: Awaitable[T], limit: float | None) -> T:
    try:
        if limit is None:
            return await work
        async with asyncio.timeout(limit):
            return await work
    except StateError as exc:
        # A backend is down: the caller answers 500/503 (DESIGN.md principle 9).
        raise Unavailable(f"registrar backend unavailable: {exc}") from None
    except AorError as exc:
        raise InvalidArgument(str(exc)) from None


class Registrar(RegistrarService):
    """The registrar service object: lifecycle + the RegistrarClient Protocol."""

    # Span helpers (sipmesh.observe); the module factory sets the process's own.
    spans: Spans = Spans.off()

    async def register(
        self,
        request: registrar_pb2.RegisterRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.RegisterReply:
        if not self.spans.enabled:
            return await self._register(request, timeout=timeout)
        with self.spans.call("registrar.register", kind=SpanKind.SERVER):
            return await self._register(request, timeout=timeout)

    async def register_parsed(
        self,
        request: registrar_pb2.RegisterRequest,
        parsed: Request,
        *,
        timeout: float | None = None,
    ) -> tuple[registrar_pb2.RegisterReply, Response]:
        """In one process (LocalRegistrar): register() with the caller's parse of
        ``request.message.raw`` (a copy is used), returning the response object too."""
        if not self.spans.enabled:
            return await self._register_full(request, parsed.copy(), timeout)
        with self.spans.call("registrar.register", kind=SpanKind.SERVER):
            return await self._register_full(request, parsed.copy(), timeout)

    async def _register(
        self,
        request: registrar_pb2.RegisterRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.RegisterReply:
        reply, _ = await self._register_full(request, _request(request.message), timeout)
        return reply

    async def _register_full(
        self,
        request: registrar_pb2.RegisterRequest,
        sip: Request,
        timeout: float | None,
    ) -> tuple[registrar_pb2.RegisterReply, Response]:
        if sip.method != "REGISTER":
            raise InvalidArgument(f"register() needs a REGISTER, got {sip.method}")
        # Secure default: the configured REGISTER authentication applies unless the
        # caller authenticated the user itself.
        authenticate = request.authenticate or (
            self.config.auth_register and not request.authenticated_user
        )
        result = await _bounded(
            self.save(
                sip,
                facts_from_pb(request.message.source),
                authenticate=authenticate,
                realm=request.realm,
                authenticated_user=request.authenticated_user,
                fix_nated=request.fix_nated,
                flags=request.flags,
            ),
            timeout,
        )
        reply = registrar_pb2.RegisterReply(
            response=sip_response(result.response),
            bindings=[binding_to_pb(b) for b in result.bindings],
            changes=[
                registrar_pb2.RegistrationChange(
                    kind=_CHANGE_PB[c.kind], binding=binding_to_pb(c.binding)
                )
                for c in result.changes
            ],
            authenticated_user=result.authenticated_user,
            aor=result.aor,
        )
        return reply, result.response

    async def authenticate(
        self,
        request: registrar_pb2.AuthenticateRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.AuthenticateReply:
        if not self.spans.enabled:
            return await self._authenticate(request, timeout=timeout)
        with self.spans.call("registrar.authenticate", kind=SpanKind.SERVER):
            return await self._authenticate(request, timeout=timeout)

    async def _authenticate(
        self,
        request: registrar_pb2.AuthenticateRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.AuthenticateReply:
        sip = _request(request.message)
        mode = request.mode
        proxy = None if mode == request.MODE_UNSPECIFIED else mode == request.MODE_PROXY
        outcome = await _bounded(
            self.authorize(
                sip,
                facts_from_pb(request.message.source),
                realm=request.realm,
                proxy=proxy,
                check_user=bool(request.flags & 1),
            ),
            timeout,
        )
        reply = registrar_pb2.AuthenticateReply(
            result=_AUTH_PB[outcome.result], user=outcome.user, domain=outcome.domain
        )
        if outcome.response is not None:
            reply.response.CopyFrom(sip_response(outcome.response))
        if outcome.ok and request.consume_credentials and outcome.header:
            # consume_credentials: the credentials never travel past us.
            reply.edits.append(
                common_pb2.HeaderEdit(op=common_pb2.HeaderEdit.OP_REMOVE, name=outcome.header)
            )
        return reply

    async def lookup(
        self,
        request: registrar_pb2.LookupRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.LookupReply:
        if not self.spans.enabled:
            return await self._lookup(request, timeout=timeout)
        with self.spans.call("registrar.lookup", kind=SpanKind.SERVER):
            return await self._lookup(request, timeout=timeout)

    async def _lookup(
        self,
        request: registrar_pb2.LookupRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.LookupReply:
        found = await _bounded(
            self.lookup_aor(
                request.aor, method=request.method, resolve_aliases=request.resolve_aliases
            ),
            timeout,
        )
        if found.method_not_allowed:
            result = registrar_pb2.LookupReply.RESULT_METHOD_NOT_ALLOWED
        elif found.found:
            result = registrar_pb2.LookupReply.RESULT_FOUND
        else:
            result = registrar_pb2.LookupReply.RESULT_NOT_FOUND
        return registrar_pb2.LookupReply(
            result=result, bindings=[binding_to_pb(b) for b in found.bindings], aor=found.aor
        )

    async def is_registered(
        self,
        request: registrar_pb2.IsRegisteredRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.IsRegisteredReply:
        found = await _bounded(self.lookup_aor(request.aor, resolve_aliases=False), timeout)
        return registrar_pb2.IsRegisteredReply(registered=found.found)

    async def show_location(
        self,
        request: registrar_pb2.ShowLocationRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.ShowLocationReply:
        bindings = await _bounded(self.show(request.aor), timeout)
        try:
            start = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument(f"bad page_token {request.page_token!r}") from None
        end = start + request.limit if request.limit else len(bindings)
        page = bindings[start:end]
        token = str(end) if end < len(bindings) else ""
        return registrar_pb2.ShowLocationReply(
            bindings=[binding_to_pb(b) for b in page], next_page_token=token
        )

    async def remove_location(
        self,
        request: registrar_pb2.RemoveLocationRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.RemoveLocationReply:
        if not request.aor:
            raise InvalidArgument("remove_location needs an AOR")
        removed = await _bounded(self.remove(request.aor, request.contact), timeout)
        if request.contact and not removed:
            raise NotFound(f"no binding {request.contact!r} for {request.aor!r}")
        return registrar_pb2.RemoveLocationReply(removed=removed)

    async def add_location(
        self,
        request: registrar_pb2.AddLocationRequest,
        *,
        timeout: float | None = None,
    ) -> registrar_pb2.AddLocationReply:
        if not request.binding.aor or not request.binding.contact:
            raise InvalidArgument("add_location needs binding.aor and binding.contact")
        made = await _bounded(self.add(binding_from_pb(request.binding)), timeout)
        return registrar_pb2.AddLocationReply(binding=binding_to_pb(made))
