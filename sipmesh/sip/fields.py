"""Typed header values: Via, CSeq, Contact, authentication parameters.

Each type parses one element of a header (a header line may hold several,
comma-separated: split them first with headers.split_list) and serialises back
with ``str()``. Malformed values raise ParseError (400).
"""

from __future__ import annotations

import re
from typing import Final

from sipmesh.sip.errors import ParseError
from sipmesh.sip.headers import (
    TOKEN_RE,
    find_unquoted,
    format_params,
    parse_params,
    quote_string,
    unquote_string,
)
from sipmesh.sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, _check_host, _split_name_addr

__all__ = [
    "CSeq",
    "Contact",
    "NameAddr",
    "Via",
    "format_auth_params",
    "parse_auth_params",
]

# RFC 3261 §20.42: via-parm = sent-protocol LWS sent-by *( SEMI via-params );
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, where SLASH
# allows whitespace around it (RFC 4475 §3.1.1.1 wsinv exercises this).
_VIA_RE: Final = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;\[\]]+)"
    r"(?:\s*:\s*([0-9]+))?\s*(;.*)?",
    re.DOTALL,
)
_VIA_FAST_RE: Final = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
)
_MAX_SEQ: Final = 2**31  # RFC 3261 §8.1.1.5: CSeq MUST be less than 2**31


class Via:
    """One Via element (RFC 3261 §20.42)."""

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}

    @classmethod
    def parse(cls, text: str) -> Via:
        fast = _VIA_FAST_RE.fullmatch(text)
        if fast is not None:
            # The common shape "SIP/2.0/UDP host[:port][;params]" with a plain host
            # name or IPv4 address; the regex already checked every character.
            transport, host, fast_port, param_text = fast.groups()
            number = None if fast_port is None else int(fast_port)
            if number is None or number <= 65535:
                via = cls.__new__(cls)
                via.protocol = "SIP/2.0"
                via.transport = transport.upper()
                via.host = host
                via.port = number
                via.params = parse_params(param_text) if param_text else {}
                return via
        match = _VIA_RE.fullmatch(text)
        if match is None:
            raise ParseError(f"bad Via: {text!r}")
        name, version, transport, host, port_text, param_text = match.groups()
        try:
            _check_host(host, text)
        except ParseError:
            raise ParseError(f"bad host in Via: {text!r}") from None
        port: int | None = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise ParseError(f"bad port in Via: {text!r}")
        try:
            params = parse_params(param_text) if param_text else {}
        except ValueError as exc:
            raise ParseError(f"bad Via parameters in {text!r}: {exc}") from None
        return cls(transport, host, port, params, f"{name}/{version}")

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """None without rport, "" for a bare ``rport``, else the digits (RFC 3581)."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> str | None:
        return self.params.get("ttl")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number and method."""

    __slots__ = ("method", "seq")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if (
            len(parts) != 2
            or not parts[0].isascii()
            or not parts[0].isdigit()
            or not TOKEN_RE.fullmatch(parts[1])
        ):
            raise ParseError(f"bad CSeq: {text!r}")
        seq = int(parts[0])
        if seq >= _MAX_SEQ:
            raise ParseError(f"CSeq number too large: {text!r}")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.seq}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.seq == other.seq and self.method == other.method

    def __hash__(self) -> int:
        return hash((self.seq, self.method))


class Contact(NameAddr):
    """One Contact element (RFC 3261 §20.10), or the ``*`` wildcard of §10.2.2."""

    __slots__ = ("is_star",)

    def __init__(
        self,
        uri: SipURI | TelURI | AbsoluteURI | None,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
        *,
        is_star: bool = False,
    ) -> None:
        super().__init__(
            uri if uri is not None else AbsoluteURI("x-star", "*"), display_name, params
        )
        self.is_star = is_star

    @classmethod
    def star(cls) -> Contact:
        return cls(None, is_star=True)

    @classmethod
    def parse(cls, text: str) -> Contact:
        if text.strip() == "*":
            return cls.star()
        display, uri, params = _split_name_addr(text)
        return cls(uri, display, params)

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None or not value.isascii() or not value.isdigit():
            return None
        return int(value)

    @property
    def q(self) -> float | None:
        # RFC 3261 §20.10: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
        value = self.params.get("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None

    @property
    def instance(self) -> str | None:
        """The +sip.instance value without its quotes (RFC 5626 §4.1)."""
        value = self.params.get("+sip.instance")
        return None if value is None else unquote_string(value)

    @property
    def reg_id(self) -> int | None:
        value = self.params.get("reg-id")
        if value is None or not value.isascii() or not value.isdigit():
            return None
        return int(value)

    def __str__(self) -> str:
        return "*" if self.is_star else super().__str__()


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a credentials/challenge value into its scheme and parameters.

    ``Digest realm="x", nonce="y", qop=auth`` -> ("Digest", {"realm": "x", ...}).
    Parameter names are lower-cased and quoted values unquoted (RFC 7235 §2.1,
    RFC 3261 §25.1). Raises ParseError on malformed input.
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if not TOKEN_RE.fullmatch(scheme):
        raise ParseError(f"bad authentication scheme in {value!r}")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    n = len(rest)
    try:
        while pos < n:
            end = find_unquoted(rest, ",", pos)
            if end < 0:
                end = n
            item = rest[pos:end].strip()
            pos = end + 1
            if not item:
                continue
            name, eq, val = item.partition("=")
            name = name.strip()
            val = val.strip()
            if not eq or not TOKEN_RE.fullmatch(name):
                raise ParseError(f"bad authentication parameter {item!r}")
            if val.startswith('"'):
                if len(val) < 2 or not val.endswith('"'):
                    raise ParseError(f"bad quoted authentication parameter {item!r}")
                val = unquote_string(val)
            params[name.lower()] = val
    except ValueError as exc:
        raise ParseError(f"bad authentication header {value!r}: {exc}") from None
    return scheme, params


# Parameters written as tokens, never quoted (RFC 2617 §3.2.2 / RFC 7616 §3.4).
# ``qop`` is a token in credentials and Authentication-Info but a quoted list in a
# challenge: a challenge builder passes ``unquoted=CHALLENGE_UNQUOTED``.
CREDENTIAL_UNQUOTED: Final = frozenset({"algorithm", "nc", "qop", "stale", "userhash"})
CHALLENGE_UNQUOTED: Final = frozenset({"algorithm", "stale", "userhash"})


def format_auth_params(
    scheme: str, params: dict[str, str], *, unquoted: frozenset[str] = CREDENTIAL_UNQUOTED
) -> str:
    """Serialise ``scheme`` and parameters (in dict order) as a header value."""
    items = [
        f"{name}={value}" if name.lower() in unquoted else f"{name}={quote_string(value)}"
        for name, value in params.items()
    ]
    return f"{scheme} {', '.join(items)}"
