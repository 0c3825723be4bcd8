"""What the routing script reads of one routing call: the request as received, the
edge's facts about its arrival, and the reply or failure a branch, reply or failure
route runs for. A base class of ``Ctx`` (sipmesh.router.api), which sets the
attributes declared here; none of these accessors changes anything.
"""

from __future__ import annotations

import re

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.router.targets import TRANSPORT_NAMES, Target
from sipmesh.router.txstate import TxState
from sipmesh.sip import Request, SipURI, parse_uri

__all__ = ["CtxFacts"]


class CtxFacts:
    """Read-only facts of ``ctx``: Kamailio's pseudo-variables of the message."""

    msg: Request
    kind: str
    _req: router_pb2.RouteRequest
    _source: common_pb2.Source
    _state: TxState
    _ruri: str
    _ruri_parsed: SipURI | None

    # -- facts of the request ---------------------------------------------------

    @property
    def method(self) -> str:
        return self.msg.method

    def is_method(self, methods: str) -> bool:
        """``is_method("INVITE|SUBSCRIBE")``."""
        return self.msg.method in methods.upper().split("|")

    @property
    def ruri(self) -> str:
        return self._ruri

    def _ruri_sip(self) -> SipURI | None:
        if self._ruri_parsed is None:
            try:
                uri = parse_uri(self._ruri)
            except ValueError:
                return None
            self._ruri_parsed = uri if isinstance(uri, SipURI) else None
        return self._ruri_parsed

    @property
    def ruser(self) -> str | None:
        """$rU: the R-URI user part (the number of a tel: URI), None when absent."""
        uri = self._ruri_sip()
        if uri is not None:
            return uri.user
        parsed = parse_uri(self._ruri)
        return getattr(parsed, "number", None)

    @property
    def rhost(self) -> str:
        uri = self._ruri_sip()
        return uri.host if uri is not None else ""

    @property
    def rport(self) -> int | None:
        uri = self._ruri_sip()
        return uri.port if uri is not None else None

    @property
    def from_uri(self) -> str:
        return str(self.msg.from_.uri)

    @property
    def from_user(self) -> str | None:
        return getattr(self.msg.from_.uri, "user", None)

    @property
    def from_domain(self) -> str:
        return str(getattr(self.msg.from_.uri, "host", ""))

    @property
    def from_tag(self) -> str | None:
        return self.msg.from_.tag

    @property
    def to_uri(self) -> str:
        return str(self.msg.to.uri)

    @property
    def to_user(self) -> str | None:
        return getattr(self.msg.to.uri, "user", None)

    @property
    def to_domain(self) -> str:
        return str(getattr(self.msg.to.uri, "host", ""))

    @property
    def to_tag(self) -> str | None:
        return self.msg.to.tag

    def has_totag(self) -> bool:
        return self.msg.to.tag is not None

    @property
    def call_id(self) -> str:
        return self.msg.call_id

    def hdr(self, name: str) -> str | None:
        """$hdr(name): the first value of a header."""
        return self.msg.get(name)

    def hdrs(self, name: str) -> list[str]:
        return self.msg.get_all(name)

    def has_hdr(self, name: str) -> bool:
        return name in self.msg

    @property
    def body(self) -> bytes:
        return self.msg.body

    # -- facts of the arrival (the edge's) --------------------------------------

    @property
    def src_ip(self) -> str:
        return self._source.remote.host

    @property
    def src_port(self) -> int:
        return self._source.remote.port

    @property
    def proto(self) -> str:
        """Transport of arrival: udp, tcp, tls, ws, wss or sctp ($pr)."""
        return TRANSPORT_NAMES.get(self._source.remote.transport, "udp")

    @property
    def local_ip(self) -> str:
        return self._source.local.host

    @property
    def local_port(self) -> int:
        return self._source.local.port

    @property
    def nat(self) -> bool:
        """NAT detected by the edge (nat_uac_test("19") of the default config)."""
        return self._source.nat_detected

    def nat_test(self, bits: int) -> bool:
        """nat_uac_test(bits): True when any of the edge's matching tests is in ``bits``."""
        return bool(self._source.nat_tests & bits)

    @property
    def edge_id(self) -> str:
        return self._source.edge_id

    @property
    def auth_user(self) -> str:
        """$au: the user authenticated by ``ctx.auth.check`` (in this or an earlier route)."""
        return self._state.auth_user

    # -- facts of a branch / reply / failure --------------------------------------

    @property
    def status(self) -> int:
        """$T_reply_code: the reply's status; in a failure route 408 for a timeout."""
        if self._req.reply_status:
            return self._req.reply_status
        if self._req.failure_reason == router_pb2.FAILURE_REASON_TIMEOUT:
            return 408
        return 0

    def t_check_status(self, pattern: str) -> bool:
        """t_check_status("3[0-9][0-9]"): the status matches the regular expression."""
        return re.fullmatch(pattern, str(self.status)) is not None

    def t_is_canceled(self) -> bool:
        """The transaction was cancelled (the best response of the failure is 487)."""
        return self.kind == "failure" and self._req.reply_status == 487

    @property
    def branch_index(self) -> int:
        return self._req.branch_index

    @property
    def branch(self) -> Target | None:
        return Target.from_proto(self._req.branch) if self._req.HasField("branch") else None

    @property
    def branch_statuses(self) -> list[int]:
        return list(self._req.branch_statuses)
