"""REGISTER processing as RFC 3261 §10.3 describes it, as pure functions.

Nothing here awaits, reads a clock or touches a store: the service passes the
request, the facts of its arrival, the policy and ``now``, and gets back either a
rejection or a plan; the plan is applied to an AOR's current bindings inside the
location store's atomic ``update`` (which may call it more than once), giving the
new bindings and the changes to announce. Steps 1-4 (domain, Require, auth) are the
caller's; :func:`parse_register` covers steps 5-6 and the expiry rules of step 7,
:func:`apply_register` the rest of step 7, :mod:`replies` step 8.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sipmesh.sip.errors import ParseError
from sipmesh.sip.fields import Contact
from sipmesh.sip.message import Request
from sipmesh.sip.uri import SipURI, TelURI, parse_uri
from sipmesh.state.location import Binding, sort_bindings

# Kamailio's method bits (parser/parse_methods.h), the usrloc ``methods`` column.
METHOD_BITS: dict[str, int] = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "REGISTER": 32,
    "SUBSCRIBE": 64,
    "NOTIFY": 128,
    "MESSAGE": 256,
    "OPTIONS": 512,
    "PRACK": 1024,
    "UPDATE": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}

# Contact parameters that describe the registration, not the UA (kept out of attrs).
_REGISTRATION_PARAMS = frozenset({"expires", "q"})


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """Where the REGISTER came from (the edge's facts, common.proto ``Source``)."""

    remote_host: str = ""
    remote_port: int = 0
    transport: str = "udp"
    socket: str = ""
    edge_id: str = ""
    flow_id: str = ""
    flow_token: str = ""
    nat_detected: bool = False

    def received_uri(self) -> str | None:
        """The source as a SIP URI (Kamailio's ``received`` column), None if unknown."""
        if not self.remote_host:
            return None
        host = self.remote_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"sip:{host}:{self.remote_port};transport={self.transport.lower()}"


@dataclass(frozen=True, slots=True)
class Policy:
    """The registrar settings a REGISTER is judged by (RegistrarConfig, pure)."""

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    max_contacts: int = 0
    replace_oldest: bool = False
    path_mode: str = "lazy"  # off | lazy | strict
    outbound_mode: str = "supported"  # off | supported | required


class Rejected(Exception):
    """A REGISTER the registrar refuses: the status, reason and extra headers to send."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """One Contact of the request, with its expiry already bounded (§10.3 step 7)."""

    uri: str
    expires: int
    q: float | None
    instance: str | None
    reg_id: int | None
    #: The contact's other header parameters (feature tags, +sip.instance ...).
    params: dict[str, str | None]

    @property
    def outbound_key(self) -> tuple[str, int] | None:
        if self.instance is None or self.reg_id is None:
            return None
        return (self.instance, self.reg_id)


@dataclass(frozen=True, slots=True)
class RegisterPlan:
    """Everything the bindings-independent part of §10.3 learnt from the request."""

    aor: str
    call_id: str
    cseq: int
    #: None for a query (no Contact), [] never; ``star`` for ``Contact: *``.
    contacts: tuple[ContactSpec, ...] | None
    star: bool
    path: tuple[str, ...]
    echo_path: bool
    outbound: bool
    received: str | None
    facts: SourceFacts
    user_agent: str
    methods: int | None

    @property
    def is_query(self) -> bool:
        return self.contacts is None and not self.star


class ChangeKind(enum.Enum):
    ADDED = "added"
    REFRESHED = "refreshed"
    REMOVED = "removed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    binding: Binding


@dataclass(slots=True)
class Outcome:
    """The result of applying a plan: the new bindings and what changed."""

    bindings: list[Binding] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def _tokens(request: Request, name: str) -> set[str]:
    return set(request.tokens(name))


def _methods(request: Request) -> int | None:
    allow = request.get_all("allow")
    if not allow:
        return None
    mask = 0
    for method in allow:
        mask |= METHOD_BITS.get(method.strip().upper(), 0)
    return mask


def bound_expires(requested: int, policy: Policy) -> int:
    """§10.3 step 7: 0 stays 0 (removal); too short -> 423; too long -> max."""
    if requested == 0:
        return 0
    if policy.min_expires and requested < policy.min_expires:
        raise Rejected(423, "Interval Too Brief", (("Min-Expires", str(policy.min_expires)),))
    return min(requested, policy.max_expires)


def parse_register(
    request: Request, aor: str, facts: SourceFacts, policy: Policy, *, fix_nated: bool = False
) -> RegisterPlan:
    """Validate a REGISTER and extract its contacts (§10.3 steps 2, 6, 7; RFC 3327, 5626).

    Raises :class:`Rejected` with the status to answer.
    """
    try:
        call_id = request.call_id
        cseq = request.cseq.seq
        header_expires = request.expires
        contacts = request.contacts
    except ParseError as exc:
        raise Rejected(400, f"Bad Request ({exc})") from None

    supported = _tokens(request, "supported")
    required = _tokens(request, "require")
    # §10.3 step 2 / RFC 3261 §8.2.2.3: extensions the UA requires that we lack.
    known = {"path"} | ({"outbound"} if policy.outbound_mode != "off" else set())
    unsupported = sorted(required - known)
    if unsupported:
        raise Rejected(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))

    star = any(c.is_star for c in contacts)
    # §10.3 step 6: "*" only alone and only with Expires: 0.
    if star and (len(contacts) != 1 or header_expires != 0):
        raise Rejected(400, "Invalid Contact * (needs Expires: 0 and no other Contact)")

    specs: list[ContactSpec] = []
    for contact in [] if star else contacts:
        specs.append(_contact_spec(contact, header_expires, policy))

    # RFC 5626 §6: reg-id counts only when the UA supports outbound and gives an instance.
    wants_outbound = "outbound" in supported or "outbound" in required
    outbound = (
        policy.outbound_mode != "off"
        and wants_outbound
        and any(s.outbound_key is not None for s in specs)
    )
    if not outbound:
        if policy.outbound_mode == "required" and any(s.expires for s in specs):
            raise Rejected(421, "Extension Required", (("Require", "outbound"),))
        specs = [replace(s, reg_id=None) for s in specs]

    path: tuple[str, ...] = ()
    echo_path = False
    raw_path = request.get_all("path")
    if raw_path and policy.path_mode != "off":
        path = tuple(p.strip() for p in raw_path)
        echo_path = "path" in supported
        if policy.path_mode == "strict" and not echo_path:
            # RFC 3327 §5.3: a registrar that needs Path from a UA that does not
            # support it says so with 420.
            raise Rejected(420, "Bad Extension", (("Unsupported", "path"),))
        if outbound and not _first_hop_has_ob(path):
            # RFC 5626 §6 (439): the edge proxy in front of us did not mark the flow.
            raise Rejected(439, "First Hop Lacks Outbound Support")

    received: str | None = None
    if fix_nated or facts.nat_detected or facts.transport.lower() in ("ws", "wss"):
        # Kamailio's fix_nated_register: the source is where the UA can be reached.
        received = facts.received_uri()

    return RegisterPlan(
        aor=aor,
        call_id=call_id,
        cseq=cseq,
        contacts=tuple(specs) if contacts else None,
        star=star,
        path=path,
        echo_path=echo_path,
        outbound=outbound,
        received=received,
        facts=facts,
        user_agent=request.user_agent or "",
        methods=_methods(request),
    )


def _first_hop_has_ob(path: tuple[str, ...]) -> bool:
    try:
        first = parse_uri(path[0].strip().strip("<>").split(">")[0])
    except (ParseError, IndexError):
        return False
    return isinstance(first, SipURI) and "ob" in first.params


def _contact_spec(contact: Contact, header_expires: int | None, policy: Policy) -> ContactSpec:
    if not isinstance(contact.uri, SipURI | TelURI):
        # An absolute URI other than sip/sips/tel (e.g. mailto:) is allowed by §10.2.1,
        # but sipmesh cannot route to it.
        raise Rejected(400, f"Unsupported Contact URI scheme ({contact.uri})")
    raw_expires = contact.params.get("expires")
    if raw_expires is not None and contact.expires is None:
        raise Rejected(400, "Bad Contact expires parameter")
    if contact.expires is not None:
        requested = contact.expires  # precedence: Contact param > Expires > default
    elif header_expires is not None:
        requested = header_expires
    else:
        requested = policy.default_expires
    if "q" in contact.params and contact.q is None:
        raise Rejected(400, "Bad Contact q-value")
    params = {k: v for k, v in contact.params.items() if k not in _REGISTRATION_PARAMS}
    return ContactSpec(
        uri=str(contact.uri),
        expires=bound_expires(requested, policy),
        q=contact.q,
        instance=contact.instance,
        reg_id=contact.reg_id,
        params=params,
    )


def same_contact(a: str, b: str) -> bool:
    """Contact URI equality by RFC 3261 §19.1.4 (§10.3 step 7 matches bindings so)."""
    if a == b:
        return True
    try:
        return parse_uri(a) == parse_uri(b)
    except ParseError:
        return False


def _find(current: dict[str, Binding], spec: ContactSpec, outbound: bool) -> Binding | None:
    key = spec.outbound_key if outbound else None
    if key is not None:
        # RFC 5626 §6: same instance and reg-id -> the new flow replaces the old one.
        for b in current.values():
            if (b.instance, b.reg_id) == key:
                return b
    for b in current.values():
        if same_contact(b.contact, spec.uri):
            return b
    return None


# RFC 3261 §17.2.3/§17.1.1.2: a server transaction lives 64*T1 = 32 s; within that
# time a request with the same Call-ID and CSeq is a retransmission of the one
# that wrote the binding, not a new (out-of-order) request.
RETRANSMISSION_WINDOW = 32.0


def _retransmission(plan: RegisterPlan, current: list[Binding], now: float) -> bool:
    """The REGISTER that wrote these bindings, received again (e.g. replayed by the
    edge after the router's stream broke mid-request, docs/edge.md): answered with
    the bindings as they are, as the server transaction would repeat its 200."""
    return any(
        b.call_id == plan.call_id
        and b.cseq == plan.cseq
        and 0 <= now - b.last_modified <= RETRANSMISSION_WINDOW
        for b in current
    )


def _check_order(existing: Binding, plan: RegisterPlan) -> None:
    # §10.3 step 7: same Call-ID needs a higher CSeq, else the whole update aborts.
    if existing.call_id == plan.call_id and plan.cseq <= existing.cseq:
        raise Rejected(500, "Server Internal Error (out-of-order CSeq)")


def apply_register(
    plan: RegisterPlan,
    current: list[Binding],
    policy: Policy,
    now: float,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Outcome:
    """§10.3 steps 6-7 on the AOR's live bindings; raises :class:`Rejected` to abort.

    The request is processed atomically: any rejection leaves ``current`` unchanged.
    """
    if plan.is_query:
        return Outcome(bindings=sort_bindings(current))
    if plan.star:
        for b in current:
            _check_order(b, plan)
        return Outcome(changes=[Change(ChangeKind.REMOVED, b) for b in sort_bindings(current)])

    if _retransmission(plan, current, now):
        return Outcome(bindings=sort_bindings(current))
    working: dict[str, Binding] = {b.contact: b for b in current}
    changes: list[Change] = []
    touched: set[str] = set()
    assert plan.contacts is not None
    for spec in plan.contacts:
        existing = _find(working, spec, plan.outbound)
        if existing is not None:
            _check_order(existing, plan)
            del working[existing.contact]
        if spec.expires == 0:
            if existing is not None:
                changes.append(Change(ChangeKind.REMOVED, existing))
            continue
        binding = _make_binding(plan, spec, existing, now, new_id)
        if existing is not None and not same_contact(existing.contact, binding.contact):
            # A new flow of the same outbound instance: the old binding goes away.
            changes.append(Change(ChangeKind.REMOVED, existing))
            existing = None
        kind = ChangeKind.ADDED if existing is None else ChangeKind.REFRESHED
        working[binding.contact] = binding
        touched.add(binding.contact)
        changes.append(Change(kind, binding))

    if policy.max_contacts and len(working) > policy.max_contacts:
        if not policy.replace_oldest:
            raise Rejected(403, "Too Many Registered Contacts")
        # Kamailio's max_contacts with "overwrite oldest": drop the least recently
        # refreshed bindings not named in this request.
        spare = sorted(
            (b for c, b in working.items() if c not in touched),
            key=lambda b: (b.last_modified, b.contact),
        )
        excess = len(working) - policy.max_contacts
        if excess > len(spare):
            raise Rejected(403, "Too Many Registered Contacts")
        for b in spare[:excess]:
            del working[b.contact]
            changes.append(Change(ChangeKind.REMOVED, b))
    return Outcome(bindings=sort_bindings(list(working.values())), changes=changes)


def _make_binding(
    plan: RegisterPlan,
    spec: ContactSpec,
    existing: Binding | None,
    now: float,
    new_id: Callable[[], str],
) -> Binding:
    facts = plan.facts
    attrs: dict[str, object] = {"params": dict(spec.params)} if spec.params else {}
    if facts.flow_token:
        attrs["flow_token"] = facts.flow_token
    return Binding(
        aor=plan.aor,
        contact=spec.uri,
        expires_at=now + spec.expires,
        q=spec.q,
        call_id=plan.call_id,
        cseq=plan.cseq,
        path=plan.path,
        received=plan.received,
        transport=facts.transport.lower(),
        socket=facts.socket or None,
        edge_id=facts.edge_id or None,
        flow_id=facts.flow_id or None,
        instance=spec.instance,
        reg_id=spec.reg_id,
        user_agent=plan.user_agent,
        methods=plan.methods,
        last_modified=now,
        ruid=existing.ruid if existing is not None and existing.ruid else new_id(),
        attrs=attrs,
    )
