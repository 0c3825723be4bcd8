"""SIP, SIPS, tel and other URIs, and name-addr (RFC 3261 §19.1, §20.10, RFC 3966).

Components are stored unescaped (so ``sip:%61lice@h`` has user ``alice``) and
escaped again when serialised. Equality and hashing follow RFC 3261 §19.1.4;
IPv6 references compare as addresses (RFC 5118 §4.10 notes textual variants).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import quote, unquote

from sipmesh.sip.errors import ParseError
from sipmesh.sip.headers import (
    TOKEN_RE,
    find_unquoted,
    format_params,
    parse_params,
    quote_string,
    unquote_string,
)

# RFC 3261 §25.1 character classes, as "safe" sets for percent-encoding.
_MARK = "-_.!~*'()"
_USER_SAFE: Final = _MARK + "&=+$,;?/"
_PASSWORD_SAFE: Final = _MARK + "&=+$,"
_PARAM_SAFE: Final = _MARK + "[]/:&+$"
_HEADER_SAFE: Final = _MARK + "[]/?:+$"

_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})*")
_PASSWORD_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAM_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_TEL_RE: Final = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")
_SIP_FAST_RE: Final = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*))?@)?"
    r"([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)"
)
# name-addr with a quoted or token display name and no surprises inside <...>.
_NAME_ADDR_FAST_RE: Final = re.compile(
    r'[ \t]*(?:"((?:[^"\\\r\n]|\\.)*)"[ \t]*|([A-Za-z0-9\-.!%*_+`\'~ \t]*?)[ \t]*)'
    r"<([^<>\s\"]+)>[ \t]*(;.*)?",
    re.DOTALL,
)
# Parameters whose presence in one URI requires a match in the other (§19.1.4).
_STRICT_PARAMS: Final = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


def normalize_host(host: str) -> str:
    """Lower-case a host; IPv6 references in their compressed form (RFC 5118)."""
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host.lower()
    return host.lower()


def _check_host(host: str, text: str) -> None:
    if not host:
        raise ParseError(f"URI without host: {text!r}")
    if host[0] == "[":
        if host[-1] != "]":
            raise ParseError(f"unterminated IPv6 reference in URI: {text!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"bad IPv6 reference in URI: {text!r}") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ParseError(f"bad host in URI: {text!r}")


class SipURI:
    """A sip: or sips: URI (RFC 3261 §19.1.1)."""

    __slots__ = ("headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        *,
        scheme: str = "sip",
        password: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}
        self.headers: dict[str, str] = dict(headers) if headers else {}

    @classmethod
    def parse(cls, text: str) -> SipURI:
        uri = parse_uri(text)
        if not isinstance(uri, SipURI):
            raise ParseError(f"not a SIP URI: {text!r}")
        return uri

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self) -> SipURI:
        return SipURI(
            self.host,
            self.user,
            scheme=self.scheme,
            password=self.password,
            port=self.port,
            params=self.params,
            headers=self.headers,
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                out.append(":" + _escape(self.password, _PASSWORD_SAFE))
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(";" + _escape(name, _PARAM_SAFE))
            if value is not None:
                out.append("=" + _escape(value, _PARAM_SAFE))
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    _escape(k, _HEADER_SAFE) + "=" + _escape(v, _HEADER_SAFE)
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def _strict_key(self) -> tuple[str | None, ...]:
        return tuple(
            None if self.params.get(p) is None else str(self.params[p]).lower()
            for p in _STRICT_PARAMS
        )

    def __eq__(self, other: object) -> bool:
        # RFC 3261 §19.1.4: userinfo case-sensitive, everything else case-insensitive,
        # escaped and unescaped forms equal, a missing port is not 5060.
        if not isinstance(other, SipURI):
            return NotImplemented
        if (
            self.scheme != other.scheme
            or self.user != other.user
            or self.password != other.password
            or normalize_host(self.host) != normalize_host(other.host)
            or self.port != other.port
        ):
            return False
        for name in _STRICT_PARAMS:
            if (name in self.params) != (name in other.params):
                return False
        for name, value in self.params.items():
            if name in other.params:
                theirs = other.params[name]
                if (value is None) != (theirs is None):
                    return False
                if value is not None and theirs is not None and value.lower() != theirs.lower():
                    return False
        mine = {k.lower(): v for k, v in self.headers.items()}
        theirs_h = {k.lower(): v for k, v in other.headers.items()}
        return mine == theirs_h

    def __hash__(self) -> int:
        return hash(
            (
                self.scheme,
                self.user,
                self.password,
                normalize_host(self.host),
                self.port,
                self._strict_key(),
                frozenset((k.lower(), v) for k, v in self.headers.items()),
            )
        )


class TelURI:
    """A tel: URI (RFC 3966): a global (+...) or local number with parameters."""

    __slots__ = ("number", "params")

    def __init__(self, number: str, params: dict[str, str | None] | None = None) -> None:
        self.number = number
        self.params: dict[str, str | None] = dict(params) if params else {}

    scheme = "tel"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def phone_context(self) -> str | None:
        return self.params.get("phone-context")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1)."""
        return "".join(c for c in self.number if c not in "-.()")

    def __str__(self) -> str:
        out = ["tel:", self.number]
        for name, value in self.params.items():
            out.append(";" + name if value is None else f";{name}={_escape(value, _PARAM_SAFE)}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"TelURI({str(self)!r})"

    def _key(self) -> tuple[str, frozenset[tuple[str, str | None]]]:
        # RFC 3966 §4: separators ignored, parameters in any order, case-insensitive.
        return (
            self.digits.lower(),
            frozenset((k, None if v is None else v.lower()) for k, v in self.params.items()),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class AbsoluteURI:
    """Any other URI (RFC 3261 §25.1 absoluteURI); kept as text."""

    __slots__ = ("rest", "scheme")

    def __init__(self, scheme: str, rest: str) -> None:
        self.scheme = scheme.lower()
        self.rest = rest

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def __repr__(self) -> str:
        return f"AbsoluteURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return self.scheme == other.scheme and self.rest == other.rest

    def __hash__(self) -> int:
        return hash((self.scheme, self.rest))


URI = SipURI | TelURI | AbsoluteURI


def _parse_params(text: str, whole: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name or not _PARAM_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value)):
            raise ParseError(f"bad URI parameter {item!r} in {whole!r}")
        params[_unescape(name).lower()] = _unescape(value) if eq else None
    return params


def _parse_sip_fast(scheme: str, rest: str) -> SipURI | None:
    """The common shapes of SIP URI in one regex; None sends the slow path.

    Only plain characters are accepted here (no escapes, no ';' '?' '/' in the
    user part, no URI headers), so what matches is valid by the RFC 3261 grammar.
    """
    match = _SIP_FAST_RE.fullmatch(rest)
    if match is None:
        return None
    user, password, host, port_text, param_text = match.groups()
    if host[0] == "[":
        return None  # IPv6 references are validated by the slow path
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    uri = SipURI(host, user, scheme=scheme, password=password, port=port)
    if param_text:
        params = uri.params
        for item in param_text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return uri


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    fast = _parse_sip_fast(scheme, rest)
    if fast is not None:
        return fast
    headers: dict[str, str] = {}
    qpos = rest.find("?")
    if qpos >= 0 and "@" in rest[qpos:]:
        # '?' is allowed in the user part: look for it after the userinfo only.
        at = rest.find("@")
        qpos = rest.find("?", at)
    user: str | None = None
    password: str | None = None
    at = rest.find("@", 0, qpos if qpos >= 0 else len(rest))
    if at >= 0:
        userinfo = rest[:at]
        rest_host = rest[at + 1 :]
        user_text, colon, pass_text = userinfo.partition(":")
        if not _USER_RE.fullmatch(user_text) or (colon and not _PASSWORD_RE.fullmatch(pass_text)):
            raise ParseError(f"bad userinfo in URI {text!r}")
        if not user_text:
            raise ParseError(f"empty user in URI {text!r}")
        user = _unescape(user_text)
        password = _unescape(pass_text) if colon else None
        if qpos >= 0:
            qpos -= at + 1
    else:
        rest_host = rest
    if qpos >= 0:
        header_text = rest_host[qpos + 1 :]
        rest_host = rest_host[:qpos]
        for item in header_text.split("&"):
            hname, eq, hvalue = item.partition("=")
            if not hname or not eq or not _HEADER_RE.fullmatch(hname + hvalue):
                raise ParseError(f"bad URI header {item!r} in {text!r}")
            headers[_unescape(hname)] = _unescape(hvalue)
    hostport, semi, param_text = rest_host.partition(";")
    params = _parse_params(param_text, text) if semi else {}
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host = hostport[: end + 1]
        tail = hostport[end + 1 :]
        if tail:
            if tail[0] != ":":
                raise ParseError(f"junk after IPv6 reference in {text!r}")
            port_text = tail[1:]
        else:
            port_text = None
    else:
        host, colon, port_text_s = hostport.partition(":")
        port_text = port_text_s if colon else None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            raise ParseError(f"bad port in URI {text!r}")
        port = int(port_text)
    _check_host(host, text)
    uri = SipURI(host, user, scheme=scheme, password=password, port=port)
    uri.params = params
    uri.headers = headers
    return uri


def parse_uri(text: str) -> SipURI | TelURI | AbsoluteURI:
    """Parse a URI; raise ParseError (400) when it is not well formed.

    Unknown schemes give an AbsoluteURI (the edge answers those with 416).
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise ParseError(f"not a URI: {text!r}")
    low = scheme.lower()
    if low in ("sip", "sips"):
        return _parse_sip(low, rest, text)
    if low == "tel":
        number, semi, param_text = rest.partition(";")
        if not _TEL_RE.fullmatch(number):
            raise ParseError(f"bad tel URI {text!r}")
        return TelURI(number, _parse_params(param_text, text) if semi else None)
    if not rest or any(c in rest for c in ' \t\r\n<>"'):
        raise ParseError(f"bad URI {text!r}")
    return AbsoluteURI(low, rest)


class NameAddr:
    """A name-addr or addr-spec with header parameters (RFC 3261 §20.10, §25.1).

    Used for From, To, Route, Record-Route, Path, Reply-To, P-Asserted-Identity.
    ``display_name`` is unquoted (None when absent); ``params`` keep their values
    as written (quoted values with their quotes), names lower-cased.
    """

    __slots__ = ("display_name", "params", "uri")

    def __init__(
        self,
        uri: SipURI | TelURI | AbsoluteURI,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params: dict[str, str | None] = dict(params) if params else {}

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        display, uri, params = _split_name_addr(text)
        return cls(uri, display, params)

    def _display_text(self) -> str:
        name = self.display_name
        if not name:
            return ""
        if all(TOKEN_RE.fullmatch(word) for word in name.split(" ")):
            return name + " "
        return quote_string(name) + " "

    def __str__(self) -> str:
        return f"{self._display_text()}<{self.uri}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


def _split_name_addr(
    text: str,
) -> tuple[str | None, SipURI | TelURI | AbsoluteURI, dict[str, str | None]]:
    match = _NAME_ADDR_FAST_RE.fullmatch(text)
    if match is not None:
        quoted, token, uri_text, param_text = match.groups()
        if quoted is not None:
            display: str | None = unquote_string(f'"{quoted}"') if "\\" in quoted else quoted
        else:
            display = " ".join(token.split()) or None
        try:
            params = parse_params(param_text) if param_text else {}
        except ValueError as exc:
            raise ParseError(f"bad name-addr {text!r}: {exc}") from None
        return display, parse_uri(uri_text), params
    return _split_name_addr_slow(text)


def _split_name_addr_slow(
    text: str,
) -> tuple[str | None, SipURI | TelURI | AbsoluteURI, dict[str, str | None]]:
    text = text.strip(" \t")
    display: str | None = None
    try:
        if text.startswith('"'):
            end = find_unquoted(text, "<", 0)
            if end < 0:
                raise ParseError(f"quoted display name without <URI>: {text!r}")
            quoted = text[:end].strip(" \t")
            close = _closing_quote(quoted)
            if close != len(quoted) - 1:
                raise ParseError(f"bad display name in {text!r}")
            display = unquote_string(quoted)
            rest = text[end:]
        else:
            lt = text.find("<")
            if lt >= 0:
                words = text[:lt].split()
                if not all(TOKEN_RE.fullmatch(w) for w in words):
                    raise ParseError(f"non-token characters in display name: {text!r}")
                display = " ".join(words) or None
                rest = text[lt:]
            else:
                rest = ""
        if rest:
            gt = rest.find(">")
            if gt < 0:
                raise ParseError(f"unterminated <URI> in {text!r}")
            uri_text = rest[1:gt]
            param_text = rest[gt + 1 :]
            if uri_text != uri_text.strip(" \t"):
                # RFC 4475 §3.1.2.14 (badaspec): no LWS inside the angle brackets.
                raise ParseError(f"whitespace inside <URI> in {text!r}")
        else:
            # addr-spec form: the URI ends at the first ';', and the parameters
            # after it belong to the header, not the URI (RFC 3261 §20.10).
            semi = text.find(";")
            uri_text = (text if semi < 0 else text[:semi]).rstrip(" \t")
            param_text = "" if semi < 0 else text[semi:]
            if any(c in uri_text for c in " \t,?"):
                raise ParseError(f"addr-spec with spaces or reserved characters: {text!r}")
        params = parse_params(param_text)
    except ValueError as exc:
        raise ParseError(f"bad name-addr {text!r}: {exc}") from None
    return display, parse_uri(uri_text), params


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted-string that starts ``text``, or -1."""
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    return -1
