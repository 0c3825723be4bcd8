"""Header names, compact forms and comma-separated list splitting.

RFC 3261 §7.3: header names are case-insensitive and some have compact forms
(§7.3.3, plus the IANA registry for later RFCs). §7.3.1: a header that is a
comma-separated list may appear as several header lines or as one line with
commas; the two are equivalent. Commas inside quoted strings and <...> are not
separators. Some headers are not lists even though their values contain commas
(the authentication headers, Date ...); those are never split.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

# RFC 3261 §7.3.3 and the IANA "Header Fields" registry compact forms.
COMPACT_FORMS: Final = MappingProxyType(
    {
        "a": "accept-contact",
        "b": "referred-by",
        "c": "content-type",
        "d": "request-disposition",
        "e": "content-encoding",
        "f": "from",
        "i": "call-id",
        "j": "reject-contact",
        "k": "supported",
        "l": "content-length",
        "m": "contact",
        "n": "identity-info",
        "o": "event",
        "r": "refer-to",
        "s": "subject",
        "t": "to",
        "u": "allow-events",
        "v": "via",
        "x": "session-expires",
        "y": "identity",
    }
)

# Conventional spelling used when a header is written from its key.
_PRETTY: Final = MappingProxyType(
    {
        "call-id": "Call-ID",
        "cseq": "CSeq",
        "www-authenticate": "WWW-Authenticate",
        "mime-version": "MIME-Version",
        "p-asserted-identity": "P-Asserted-Identity",
        "p-preferred-identity": "P-Preferred-Identity",
        "rack": "RAck",
        "rseq": "RSeq",
    }
)

# Headers defined as comma-separated lists (RFC 3261 §7.3.1 and §20, RFC 3262, 3265,
# 3325, 3326, 3327, 3329, 3608, 3840, 3841, 4244, 5626 ...). Only these are split on
# commas: an unknown header's grammar is unknown, so its value is kept whole and
# forwarded unchanged (RFC 4475 §3.1.1.1, UnknownHeaderWithUnusualValue). The
# authentication headers and Date contain commas but are not lists.
LIST_HEADERS: Final = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "allow-events",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "accept-contact",
        "reject-contact",
        "request-disposition",
        "alert-info",
        "call-info",
        "error-info",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "warning",
        "reason",
        "p-asserted-identity",
        "p-preferred-identity",
        "p-associated-uri",
        "history-info",
        "security-client",
        "security-server",
        "security-verify",
    }
)

# Precomputed keys for the spellings met on the hot path, so that parsing does not
# lower-case and validate the common names again and again.
_COMMON: Final = (
    "Via",
    "From",
    "To",
    "Call-ID",
    "Call-Id",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Route",
    "Record-Route",
    "Path",
    "Expires",
    "Min-Expires",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "User-Agent",
    "Server",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Event",
    "Subscription-State",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Allow-Events",
    "Date",
    "Subject",
    "Organization",
    "Timestamp",
    "Warning",
    "P-Asserted-Identity",
    "Session-Expires",
    "Min-SE",
    "Refer-To",
    "Referred-By",
    "Content-Disposition",
    "Content-Encoding",
    "Priority",
    "RSeq",
    "RAck",
    "Retry-After",
    "Reason",
    "Privacy",
    "Authentication-Info",
)
KNOWN_KEYS: Final = MappingProxyType(
    {
        **{n: n.lower() for n in _COMMON},
        **{n.lower(): n.lower() for n in _COMMON},
        **{n.upper(): n.lower() for n in _COMMON},
        **dict(COMPACT_FORMS),
        **{k.upper(): v for k, v in COMPACT_FORMS.items()},
    }
)

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def header_key(name: str) -> str:
    """The canonical lower-case long name of a header (compact forms expanded)."""
    key = KNOWN_KEYS.get(name)
    if key is not None:
        return key
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low)


def pretty_name(key: str) -> str:
    """A conventional spelling for a canonical key ("call-id" -> "Call-ID")."""
    pretty = _PRETTY.get(key)
    if pretty is not None:
        return pretty
    return "-".join(part.capitalize() for part in key.split("-"))


def is_list_header(key: str) -> bool:
    """True when a header (by canonical key) is a comma-separated list."""
    return key in LIST_HEADERS


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, not inside quotes or <...>.

    Empty elements are dropped (RFC 7230 §7 tolerance, also met in SIP stacks).
    """
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


def unquote_string(text: str) -> str:
    """The content of a quoted-string (RFC 3261 §25.1), quoted-pairs resolved.

    Text that is not quoted is returned unchanged.
    """
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            i += 1
            ch = inner[i]
        out.append(ch)
        i += 1
    return "".join(out)


def quote_string(text: str) -> str:
    """A quoted-string for ``text`` (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_unquoted(text: str, chars: str, start: int = 0) -> int:
    """Index of the first of ``chars`` outside a quoted-string, or -1.

    Raises ValueError on an unterminated quoted-string.
    """
    if text.find('"', start) < 0:
        # Fast path (the common case): no quoted-string to skip.
        best = -1
        for ch in chars:
            found = text.find(ch, start)
            if found >= 0 and (best < 0 or found < best):
                best = found
        return best
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                i += 1
            if i >= n:
                raise ValueError("unterminated quoted-string")
        elif ch in chars:
            return i
        i += 1
    return -1


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` generic parameters (RFC 3261 §25.1 generic-param).

    Names are lower-cased; values are kept as written (quoted values keep their
    quotes, so they serialise unchanged). Raises ValueError on malformed input.
    """
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    text = text.strip()
    if text[0] != ";":
        raise ValueError(f"parameters must start with ';': {text!r}")
    if _PLAIN_PARAMS_RE.fullmatch(text):
        # Fast path: tokens only, no whitespace, validated by one regex.
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    if '"' not in text:
        # No quoted values, so every ';' separates parameters.
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            name = name.strip(" \t")
            if eq:
                value = value.strip(" \t")
                if not value or not _PARAM_VALUE_RE.fullmatch(value):
                    raise ValueError(f"bad value for parameter {name!r}: {value!r}")
            if not TOKEN_RE.fullmatch(name):
                raise ValueError(f"bad parameter name {name!r}")
            params[name.lower()] = value if eq else None
        return params
    pos = 1
    n = len(text)
    while pos <= n:
        end = find_unquoted(text, ";", pos)
        if end < 0:
            end = n
        item = text[pos:end]
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        value = value.strip(" \t")
        if not TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad parameter name {name!r}")
        if eq:
            if not value:
                raise ValueError(f"empty value for parameter {name!r}")
            if value[0] == '"':
                if value[-1] != '"' or len(value) < 2:
                    raise ValueError(f"bad quoted value for parameter {name!r}")
            elif not _PARAM_VALUE_RE.fullmatch(value):
                raise ValueError(f"bad value for parameter {name!r}: {value!r}")
        params[name.lower()] = value if eq else None
        pos = end + 1
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# gen-value = token / host / quoted-string; host covers IPv6 references.
_PARAM_VALUE_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_PLAIN_PARAMS_RE: Final = re.compile(
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)+"
)
