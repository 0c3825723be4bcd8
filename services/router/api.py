"""The routing script API: ``ctx``, in the spirit of Kamailio's KEMI ``KSR``.

A routing script is a Python module with ``request_route(ctx)`` and, optionally,
``branch_route``, ``reply_route`` and ``failure_route`` (plus any handler a script
arms by name with ``ctx.t_on_failure("name")`` …). Functions may be sync or async;
the methods that ask another service (``ctx.auth.check``, ``ctx.registrar.save`` /
``lookup``, ``ctx.presence.handle``, ``ctx.resolve``) are coroutines, so scripts that
use them are ``async def``.

What the script reads is the message as received (like Kamailio, header edits are
applied by the edge when it sends, so ``ctx.hdr`` still sees the original), except
the Request-URI: ``ctx.ruri`` follows ``set_ruri``/``set_ruser``/``prefix``/``strip``
as ``$ru`` does. Exactly one action ends a decision: ``reply``, ``relay``,
``forward``, ``drop`` or ``proceed``; ``ctx.exit()`` stops the script (KSR.x.exit).
A request route that ends without an action drops the request, as Kamailio does.

Kamailio pseudo-variable → ctx: $rm method, $ru ruri, $rU ruser, $rd rhost, $rp rport,
$du du, $fu/$fU/$fd/$ft from_uri/from_user/from_domain/from_tag, $tu/$tU/$td/$tt
to_*, $ci call_id, $si/$sp/$pr src_ip/src_port/proto, $Ri/$Rp local_ip/local_port,
$au auth_user, $hdr(X) hdr("X"), $T_reply_code status, $avp/$var vars.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.router.facets import AuthFacet, MediaFacet, PresenceFacet, RegistrarFacet
from sipmesh.router.facts import CtxFacts
from sipmesh.router.resolve import Hop, ResolveError
from sipmesh.router.tablefacets import DialplanFacet, DispatcherFacet, LcrFacet
from sipmesh.router.targets import Target, serial_groups
from sipmesh.router.txstate import TxState, VarValue
from sipmesh.sip import Request, Response, SipURI, parse_uri

if TYPE_CHECKING:
    from sipmesh.router.env import RouterEnv
    from sipmesh.runtime.sections.router import RouterConfig, RouterFeatures

# Flags of kamailio.cfg, same numbers.
FLT_ACC = 1
FLT_ACCMISSED = 2
FLT_ACCFAILED = 3
FLT_NATS = 5
FLB_NATB = 6
FLB_NATSIPPING = 7

_Edit = common_pb2.HeaderEdit
_KINDS = {
    router_pb2.ROUTE_KIND_REQUEST: "request",
    router_pb2.ROUTE_KIND_BRANCH: "branch",
    router_pb2.ROUTE_KIND_REPLY: "reply",
    router_pb2.ROUTE_KIND_FAILURE: "failure",
}


class ScriptExit(Exception):
    """Raised by ``ctx.exit()``; the runner ends the script quietly."""


class DecisionError(RuntimeError):
    """The script asked for a second action, or for one its route does not allow."""


class Ctx(CtxFacts):
    """The routing context of one call (one request, branch, reply or failure)."""

    def __init__(
        self,
        env: RouterEnv,
        request: router_pb2.RouteRequest,
        msg: Request,
        state: TxState,
        reply: Response | None = None,
    ) -> None:
        self._env = env
        self._req = request
        self.msg = msg
        """The request (for reply/failure routes: the request as received from the caller)."""
        self.reply_msg = reply
        """The reply (reply route) or best final response (failure route), if any."""
        self.reply_message: Response | None = None
        """The object a ``reply_raw`` reply was serialised from, when built in this
        process (the registrar's response): handed to the edge with the decision."""
        self.kind = _KINDS.get(request.kind, "request")
        """'request', 'branch', 'reply' or 'failure'."""
        self._state = state
        self.vars: dict[str, VarValue] = state.vars
        """Per-transaction variables (like $avp); kept across the transaction's routes."""
        self._source = request.message.source
        self._ruri = msg.uri
        self._ruri_parsed: SipURI | None = None
        self._ruri_changed = False
        self.du = ""
        """Next-hop override ($du) for the branch built from the R-URI."""
        self.bflags = 0
        """Branch flags of the branch built from the R-URI ($bf)."""
        self.flow_token = ""
        """RFC 5626 flow token of the branch built from the R-URI: set by
        ``loose_route`` from our own popped Route (the edge that owns the flow gets
        the request, services/edge/flowtoken.py)."""
        self._action: str | None = None
        self._decision = router_pb2.Decision()
        self._edits: list[common_pb2.HeaderEdit] = []
        self._branches: list[Target] = []
        # A failure route's new branches keep the Record-Route of the request route
        # (TxState.record_route), as in Kamailio where record_route() edits the request.
        self._rr = state.record_route if self.kind == "failure" else False
        self._rr_params = state.record_route_params if self.kind == "failure" else ""
        self._fr_ms = 0
        self._fr_inv_ms = 0
        self._acc_extra: dict[str, str] = {}
        self._media: list[router_pb2.MediaOp] = []
        self.auth = AuthFacet(self, env)
        self.registrar = RegistrarFacet(self, env)
        self.presence = PresenceFacet(self, env)
        self.media = MediaFacet(self)
        self.ds = DispatcherFacet(self, env)
        self.lcr = LcrFacet(self, env)
        self.dp = DialplanFacet(self, env)

    # -- myself, features, cfg, tables ------------------------------------------------

    def is_myself(self, uri_or_host: str) -> bool:
        """``uri==myself``: a URI (or bare host) names this proxy or one of its domains."""
        host, port = uri_or_host, None
        if ":" in uri_or_host and not uri_or_host.startswith("["):
            try:
                parsed = parse_uri(uri_or_host)
            except ValueError:
                parsed = None
            if isinstance(parsed, SipURI):
                host, port = parsed.host, parsed.port
            elif parsed is not None:
                return False
        return self._env.myself.host_is_mine(host, port, self.local_ip)

    def uri_is_myself(self) -> bool:
        """``uri==myself`` for the current R-URI."""
        uri = self._ruri_sip()
        return uri is not None and self._env.myself.host_is_mine(uri.host, uri.port, self.local_ip)

    def from_is_myself(self) -> bool:
        """``from_uri==myself``."""
        uri = self.msg.from_.uri
        return isinstance(uri, SipURI) and self._env.myself.host_is_mine(
            uri.host, uri.port, self.local_ip
        )

    @property
    def settings(self) -> RouterConfig:
        """The router's configuration section (patterns, ipauth group ...)."""
        return self._env.settings

    @property
    def features(self) -> RouterFeatures:
        """The WITH_* switches (``ctx.features.nat`` …)."""
        return self._env.features

    def cfg_get(self, group: str, name: str) -> str:
        """$sel(cfg_get.group.name): a runtime value (admin-changeable, no restart)."""
        return self._env.cfg.get(group, name)

    def allow_source_address(self, grp: int | None = None) -> bool:
        """permissions: the source IP (and port) is in the address table group."""
        group = self._env.settings.ipauth_group if grp is None else grp
        return self._env.tables.allow_source_address(self.src_ip, self.src_port, group) is not None

    def sd_lookup(self) -> bool:
        """speeddial's sd_lookup: rewrite the R-URI from the caller's speed_dial entry."""
        user = self.ruser
        caller = self.from_user
        if not user or not caller:
            return False
        new = self._env.tables.speed_dial_lookup(caller, self.from_domain, user)
        if new is None:
            return False
        self.set_ruri(new)
        return True

    def alias_db_lookup(self) -> bool:
        """alias_db_lookup: replace an alias R-URI user@domain by its canonical one."""
        user = self.ruser
        if not user:
            return False
        hit = self._env.tables.alias_lookup(user, self.rhost)
        if hit is None:
            return False
        uri = self._ruri_sip()
        if uri is None:
            return False
        new = uri.copy()
        new.user, new.host = hit[0], hit[1] or uri.host
        self.set_ruri(str(new))
        return True

    async def resolve(self, uri: str | None = None) -> list[Hop]:
        """RFC 3263 next hops of ``uri`` (default: $du or the R-URI); raises ResolveError."""
        return await self._env.resolver.resolve(uri or self.du or self._ruri)

    # -- flags and logging ----------------------------------------------------------

    def setflag(self, flag: int) -> None:
        self._state.flags |= 1 << flag

    def resetflag(self, flag: int) -> None:
        self._state.flags &= ~(1 << flag)

    def isflagset(self, flag: int) -> bool:
        return bool(self._state.flags & (1 << flag))

    def setbflag(self, flag: int) -> None:
        self.bflags |= 1 << flag

    def isbflagset(self, flag: int) -> bool:
        return bool(self.bflags & (1 << flag))

    def log(self, message: str, level: int = logging.INFO) -> None:
        """xlog. Mind DESIGN.md: nothing per message above debug level in production."""
        self._env.log.log(level, "%s [%s %s]", message, self.msg.method, self.call_id)

    # -- editing --------------------------------------------------------------------

    def set_ruri(self, uri: str) -> None:
        """$ru = uri."""
        self._ruri = uri
        self._ruri_parsed = None
        self._ruri_changed = True

    def set_ruser(self, user: str) -> None:
        """$rU = user."""
        uri = self._ruri_sip()
        if uri is None:
            raise DecisionError(f"cannot set the user of {self._ruri!r}")
        new = uri.copy()
        new.user = user
        self.set_ruri(str(new))

    def set_rhost(self, host: str, port: int | None = None) -> None:
        """$rd = host (and $rp)."""
        uri = self._ruri_sip()
        if uri is None:
            raise DecisionError(f"cannot set the host of {self._ruri!r}")
        new = uri.copy()
        new.host, new.port = host, port
        self.set_ruri(str(new))

    def prefix(self, text: str) -> None:
        """prefix(): put ``text`` before the R-URI user."""
        self.set_ruser(text + (self.ruser or ""))

    def strip(self, count: int) -> None:
        """strip(): remove ``count`` characters from the start of the R-URI user."""
        self.set_ruser((self.ruser or "")[count:])

    def set_du(self, uri: str) -> None:
        """$du = uri (empty: none)."""
        self.du = uri

    def append_hf(self, name: str, value: str) -> None:
        self._edits.append(_Edit(op=_Edit.OP_APPEND, name=name, value=value))

    def insert_hf(self, name: str, value: str) -> None:
        self._edits.append(_Edit(op=_Edit.OP_INSERT, name=name, value=value))

    def remove_hf(self, name: str) -> None:
        self._edits.append(_Edit(op=_Edit.OP_REMOVE, name=name))

    def replace_hf(self, name: str, value: str) -> None:
        self._edits.append(_Edit(op=_Edit.OP_REPLACE, name=name, value=value))

    def remove_hf_value(self, name: str, value: str) -> None:
        self._edits.append(_Edit(op=_Edit.OP_REMOVE_VALUE, name=name, value=value))

    def add_edits(self, edits: Iterable[common_pb2.HeaderEdit]) -> None:
        self._edits.extend(edits)

    def set_body(self, body: bytes, content_type: str = "") -> None:
        self._decision.body = body
        self._decision.replace_body = True
        self._decision.content_type = content_type

    def acc_extra(self, name: str, value: str) -> None:
        """A value for an extra column of the accounting record."""
        self._acc_extra[name] = value

    # -- routing helpers ----------------------------------------------------------------

    def record_route(self, params: str = "") -> None:
        """Add Record-Route when relaying (RFC 3261 §16.6 step 4)."""
        self._rr = True
        if params:
            self.add_rr_param(params)

    def add_rr_param(self, params: str) -> None:
        """add_rr_param(";nat=yes")."""
        self._rr_params += params if params.startswith(";") else ";" + params

    def check_route_param(self, param: str) -> bool:
        """check_route_param("nat=yes") on the Route the request came with."""
        return any(param in [*route.split(";", 1), ""][1] for route in self.hdrs("route"))

    def loose_route(self) -> bool:
        """RFC 3261 §16.4: pop our own Route entries; True when the request had Routes.

        The topmost Route values naming this proxy are removed (two when the edge
        double-record-routed across transports); the request then goes to the next
        Route, or to the R-URI when none is left.
        """
        values = self.hdrs("route")
        if not values:
            return False
        for value, addr in zip(values, self.msg.routes, strict=False):
            uri = addr.uri
            if not isinstance(uri, SipURI) or not self._env.myself.host_is_mine(
                uri.host, uri.port, self.local_ip
            ):
                break
            self.remove_hf_value("Route", value)
            if not self.flow_token:
                self.flow_token = self._route_flow(uri)
        return True

    def _route_flow(self, uri: SipURI) -> str:
        """The flow token our Record-Route holds for this request's direction.

        The edge Record-Routes a dialog with ``ftag`` (the initial From tag, as
        Kamailio's rr ``is_direction``) and the flow tokens of the caller's and the
        callee's side (RFC 5626 §5.3): a request whose From tag is ``ftag`` comes
        from the caller and goes to the callee's flow, any other to the caller's.
        """
        ftag = uri.params.get("ftag")
        if not ftag:
            return ""
        to_callee = ftag == self.msg.from_.tag
        token = uri.params.get("flow-callee" if to_callee else "flow-caller")
        return token or ""

    def t_on_failure(self, name: str) -> None:
        self._state.failure = name

    def t_on_reply(self, name: str) -> None:
        self._state.reply = name

    def t_on_branch(self, name: str) -> None:
        self._state.branch = name

    def t_is_set(self, what: str) -> bool:
        """t_is_set("failure_route" | "onreply_route" | "branch_route")."""
        return bool(
            {
                "failure_route": self._state.failure,
                "onreply_route": self._state.reply,
                "branch_route": self._state.branch,
            }.get(what)
        )

    def set_fr_timer(self, fr_ms: int = 0, fr_inv_ms: int = 0) -> None:
        """t_set_fr(): final response timer and INVITE timer C for this transaction."""
        self._fr_ms, self._fr_inv_ms = fr_ms, fr_inv_ms

    def append_branch(self, target: Target | str) -> None:
        """Add a branch (like append_branch()/lookup's extra contacts)."""
        self._branches.append(Target(target) if isinstance(target, str) else target)

    def clear_branches(self) -> None:
        self._branches.clear()

    @property
    def branches(self) -> list[Target]:
        return list(self._branches)

    # -- actions -------------------------------------------------------------------------

    @property
    def decided(self) -> bool:
        return self._action is not None

    @property
    def action(self) -> str | None:
        """'reply', 'relay', 'drop' or 'proceed' once decided."""
        return self._action

    def _take(self, action: str) -> None:
        if self._action is not None:
            raise DecisionError(f"a decision was already made ({self._action}); cannot {action}")
        self._action = action

    def reply(
        self,
        code: int,
        reason: str = "",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        stateless: bool = False,
    ) -> None:
        """Answer the request (send_reply / t_reply; ``stateless=True``: sl_send_reply)."""
        if self.kind in ("branch", "reply"):
            raise DecisionError(f"cannot reply in a {self.kind} route")
        self._take("reply")
        self._decision.reply.CopyFrom(
            router_pb2.Reply(
                code=code,
                reason=reason,
                headers=[common_pb2.Header(name=n, value=v) for n, v in headers],
                body=body,
                stateless=stateless,
            )
        )

    def sl_send_reply(self, code: int, reason: str = "") -> None:
        self.reply(code, reason, stateless=True)

    def reply_raw(
        self, raw: bytes, code: int = 0, reason: str = "", *, message: Response | None = None
    ) -> None:
        """Send a fully formed response (from the registrar or presence) as is.

        ``message``: the Response ``raw`` was serialised from, when it was built in
        this process (the edge then sends it without parsing ``raw`` again).
        """
        self._take("reply")
        self._decision.reply.CopyFrom(router_pb2.Reply(raw=raw, code=code, reason=reason))
        self.reply_message = message

    def relay(self, *targets: Target | str, serial: bool = False) -> None:
        """t_relay: forward to ``targets``; none given: the R-URI ($du, $bf) plus branches.

        ``serial=True`` forks group after group: targets with the same ``group`` in
        parallel; without groups set, one group per q-value, highest first.
        """
        if self.kind in ("branch", "reply"):
            raise DecisionError(f"cannot relay in a {self.kind} route")
        built = [Target(t) if isinstance(t, str) else t for t in targets]
        if not built:
            built = self._branches or [
                Target(self._ruri, self.du, branch_flags=self.bflags, flow_token=self.flow_token)
            ]
        if serial and not any(t.group for t in built):
            serial_groups(built)
        self._take("relay")
        relay = self._decision.relay
        relay.targets.extend(t.to_proto() for t in built)
        relay.mode = (
            router_pb2.Relay.FORK_MODE_SERIAL if serial else router_pb2.Relay.FORK_MODE_PARALLEL
        )
        relay.record_route = self._rr
        relay.record_route_params = self._rr_params
        self._state.record_route, self._state.record_route_params = self._rr, self._rr_params
        relay.fr_timer_ms = self._fr_ms
        relay.fr_inv_timer_ms = self._fr_inv_ms
        relay.send_100 = self.msg.method == "INVITE" and self.kind == "request"
        # Handlers are filled in when the decision is built (t_on_* may follow relay()).

    def forward(self, *targets: Target | str) -> None:
        """forward(): relay statelessly (ACK for 2xx, stateless in-dialog relay)."""
        self.relay(*targets)
        self._decision.relay.stateless = True

    def drop(self, reason: str = "") -> None:
        """Do nothing with the message (drop; in a branch route: do not send the branch)."""
        self._take("drop")
        self._decision.drop.reason = reason

    def proceed(self) -> None:
        """Carry on with the default: forward the reply / the best response / the branch."""
        self._take("proceed")
        self._decision.proceed.SetInParent()

    def exit(self) -> NoReturn:
        """Stop the script here (KSR.x.exit); the decision made so far stands."""
        raise ScriptExit

    def resolve_error_reply(self, error: ResolveError) -> None:
        """Answer with the status a resolution failure maps to (404/408/503)."""
        reasons = {404: "Not Found", 408: "Request Timeout", 416: "Unsupported URI Scheme"}
        self.sl_send_reply(error.status, reasons.get(error.status, "Service Unavailable"))

    # -- building the Decision -----------------------------------------------------------

    def add_media_op(self, op: router_pb2.MediaOp) -> None:
        self._media.append(op)

    def build(self, version: str) -> router_pb2.Decision:
        """The Decision for the edge; a request route without action drops."""
        d = self._decision
        if self._action is None:
            if self.kind == "request":
                d.drop.reason = "no decision"
            else:
                d.proceed.SetInParent()
        if self.kind == "branch" and self._rr_params:
            # add_rr_param in branch_route (";nat=yes"): this branch's Record-Route.
            d.record_route_params = self._rr_params
        d.edits.extend(self._edits)
        if self._ruri_changed:
            d.ruri = self._ruri
        if d.HasField("relay"):
            h = d.relay.handlers
            h.failure, h.reply, h.branch = (
                self._state.failure,
                self._state.reply,
                self._state.branch,
            )
        if self._media:
            d.media_ops.extend(self._media)
        d.flags = self._state.flags & 0xFFFFFFFF
        if self._state.auth_user:
            d.authenticated_user = self._state.auth_user
        if self._env.features.accdb and self._state.flags & (
            (1 << FLT_ACC) | (1 << FLT_ACCMISSED) | (1 << FLT_ACCFAILED)
        ):
            d.acc.acc = self.isflagset(FLT_ACC)
            d.acc.missed = self.isflagset(FLT_ACCMISSED)
            d.acc.failed = self.isflagset(FLT_ACCFAILED)
            for key, value in self._acc_extra.items():
                d.acc.extra[key] = value
        self._state.version = version
        d.context = self._state.encode()
        return d

    # Used by the facets.
    def _set_auth_user(self, user: str) -> None:
        self._state.auth_user = user
