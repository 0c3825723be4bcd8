"""SIP requests and responses with an ordered header list (RFC 3261 §7).

Headers are kept as received: raw names, values (folded lines joined with one
space) and order, so a proxy forwards what it does not understand unchanged
(§16.6). Names compare case-insensitively and compact forms equal long forms.
Typed values (Via, From, CSeq ...) are parsed on first use and cached; editing a
header drops the caches. An unmodified parsed message serialises byte-identical
to its input; an edited one is written canonically from its header list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sipmesh.sip.errors import ParseError
from sipmesh.sip.fields import Contact, CSeq, Via
from sipmesh.sip.headers import header_key, is_list_header, split_list
from sipmesh.sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_uri

_T = TypeVar("_T")
_M = TypeVar("_M", bound="Message")
# (canonical key, name as written, value)
_Entry = tuple[str, str, str]


class Message:
    """What requests and responses share: headers, body, version."""

    __slots__ = ("_body", "_cache", "_hdrs", "_raw", "_version")

    def __init__(self, headers: Iterable[tuple[str, str]], body: bytes, version: str) -> None:
        self._hdrs: list[_Entry] = [(header_key(n), n, v) for n, v in headers]
        self._body = bytes(body)
        self._version = version
        self._raw: bytes | None = None
        self._cache: dict[str, Any] = {}

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        self._version = value
        self._raw = None

    # -- raw header list -------------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        """A copy of the header list as (name as written, value) pairs, in order."""
        return [(n, v) for _, n, v in self._hdrs]

    def _changed(self) -> None:
        self._raw = None
        if self._cache:
            self._cache.clear()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self._hdrs)

    def get(self, name: str) -> str | None:
        """The first value of a header (the first comma-separated element of a list)."""
        key = header_key(name)
        for k, _, v in self._hdrs:
            if k == key:
                if "," in v and is_list_header(key):
                    parts = split_list(v)
                    if parts:
                        return parts[0]
                    continue
                return v.strip()
        return None

    def get_instances(self, name: str) -> list[str]:
        """The value of every header line of that name, unsplit, in order."""
        key = header_key(name)
        return [v for k, _, v in self._hdrs if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of every instance, comma lists split (§7.3.1), in order."""
        key = header_key(name)
        if not is_list_header(key):
            return [v for k, _, v in self._hdrs if k == key]
        out: list[str] = []
        for k, _, v in self._hdrs:
            if k == key:
                out.extend(split_list(v))
        return out

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a header, or with ``first=True`` put it above all of that name."""
        key = header_key(name)
        entry = (key, name, value)
        if first:
            for i, (k, _, _) in enumerate(self._hdrs):
                if k == key:
                    self._hdrs.insert(i, entry)
                    break
            else:
                self._hdrs.insert(0, entry)
        else:
            self._hdrs.append(entry)
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every instance with one (at the place of the first), or append."""
        key = header_key(name)
        out: list[_Entry] = []
        done = False
        for entry in self._hdrs:
            if entry[0] == key:
                if not done:
                    out.append((key, entry[1], value))
                    done = True
            else:
                out.append(entry)
        if not done:
            out.append((key, name, value))
        self._hdrs = out
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every instance of a header; return how many lines were removed."""
        key = header_key(name)
        before = len(self._hdrs)
        self._hdrs = [e for e in self._hdrs if e[0] != key]
        removed = before - len(self._hdrs)
        if removed:
            self._changed()
        return removed

    def pop_first(self, name: str) -> str | None:
        """Remove and return the topmost value (``Via: a, b`` keeps ``b``)."""
        key = header_key(name)
        for i, (k, n, v) in enumerate(self._hdrs):
            if k != key:
                continue
            parts = split_list(v) if is_list_header(key) else [v.strip()]
            if len(parts) > 1:
                self._hdrs[i] = (k, n, ", ".join(parts[1:]))
            else:
                del self._hdrs[i]
            self._changed()
            return parts[0] if parts else ""
        return None

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the topmost value (e.g. the top Via after adding received/rport)."""
        key = header_key(name)
        for i, (k, n, v) in enumerate(self._hdrs):
            if k != key:
                continue
            parts = split_list(v) if is_list_header(key) else [v]
            self._hdrs[i] = (k, n, ", ".join([value, *parts[1:]]))
            self._changed()
            return True
        return False

    # -- body ------------------------------------------------------------------

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        """Setting the body keeps Content-Length in step with it."""
        self._body = bytes(value)
        self.set("Content-Length", str(len(self._body)))

    # -- typed accessors (lazy, cached) ---------------------------------------

    def _cached(self, slot: str, build: Callable[[], _T]) -> _T:
        try:
            value: _T = self._cache[slot]
            return value
        except KeyError:
            value = build()
            self._cache[slot] = value
            return value

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise ParseError(f"missing {name} header")
        return value

    @property
    def vias(self) -> list[Via]:
        return self._cached("vias", lambda: [Via.parse(v) for v in self.get_all("via")])

    @property
    def top_via(self) -> Via | None:
        def build() -> Via | None:
            first = self.get("via")
            return None if first is None else Via.parse(first)

        return self._cached("top_via", build)

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: NameAddr.parse(self._required("from")))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: NameAddr.parse(self._required("to")))

    @property
    def call_id(self) -> str:
        return self._required("call-id")

    @property
    def cseq(self) -> CSeq:
        return self._cached("cseq", lambda: CSeq.parse(self._required("cseq")))

    def _int_header(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit():
            raise ParseError(f"bad {name} header: {value!r}")
        return int(value)

    @property
    def max_forwards(self) -> int | None:
        return self._int_header("max-forwards")

    @property
    def expires(self) -> int | None:
        return self._int_header("expires")

    @property
    def min_expires(self) -> int | None:
        return self._int_header("min-expires")

    @property
    def content_length(self) -> int | None:
        return self._int_header("content-length")

    @property
    def content_type(self) -> str | None:
        return self.get("content-type")

    @property
    def contacts(self) -> list[Contact]:
        return self._cached("contacts", lambda: [Contact.parse(v) for v in self.get_all("contact")])

    def _name_addrs(self, name: str) -> list[NameAddr]:
        return self._cached(name, lambda: [NameAddr.parse(v) for v in self.get_all(name)])

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addrs("route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("record-route")

    @property
    def paths(self) -> list[NameAddr]:
        return self._name_addrs("path")

    @property
    def p_asserted_identities(self) -> list[NameAddr]:
        return self._name_addrs("p-asserted-identity")

    def tokens(self, name: str) -> list[str]:
        """Lower-cased option tags / methods of Allow, Supported, Require ... lists."""
        return [v.lower() for v in self.get_all(name)]

    @property
    def user_agent(self) -> str | None:
        return self.get("user-agent")

    @property
    def event(self) -> str | None:
        return self.get("event")

    # -- copies ----------------------------------------------------------------

    def copy(self: _M) -> _M:
        """An independent copy, without parsing again (the in-process hand-over).

        Edits of the copy (or of the original) do not show in the other: the header
        list is copied (its entries are immutable tuples). The typed values parsed so
        far (Via, From, To ...) are shared, so a service handed a parsed message by
        another in the same process does not parse them again; like every cached
        value they are read-only (edits go through the header methods, which drop
        the caches of the message edited).
        """
        clone = object.__new__(type(self))
        clone._hdrs = list(self._hdrs)
        clone._body = self._body
        clone._version = self._version
        clone._raw = self._raw
        # Lists of typed values are copied: appending to one must not show in both.
        clone._cache = {k: (list(v) if isinstance(v, list) else v) for k, v in self._cache.items()}
        self._copy_start_line(clone)
        return clone

    def _copy_start_line(self, clone: Any) -> None:
        raise NotImplementedError

    # -- serialisation ---------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        if self._raw is not None:
            return self._raw
        lines = [self._start_line()]
        lines.extend(f"{n}: {v}" for _, n, v in self._hdrs)
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self._body


class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    __slots__ = ("_method", "_ruri", "_uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self._method = method
        self._uri = uri
        self._ruri: SipURI | TelURI | AbsoluteURI | None = None

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        self._method = value
        self._raw = None

    @property
    def uri(self) -> str:
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        self._uri = value
        self._ruri = None
        self._raw = None

    @property
    def ruri(self) -> SipURI | TelURI | AbsoluteURI:
        if self._ruri is None:
            self._ruri = parse_uri(self._uri)
        return self._ruri

    def _copy_start_line(self, clone: Any) -> None:
        clone._method = self._method
        clone._uri = self._uri
        clone._ruri = self._ruri

    def _start_line(self) -> str:
        return f"{self._method} {self._uri} {self._version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri}>"


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("_reason", "_status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self._status = status
        self._reason = reason

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value
        self._raw = None

    @property
    def reason(self) -> str:
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value
        self._raw = None

    def _copy_start_line(self, clone: Any) -> None:
        clone._status = self._status
        clone._reason = self._reason

    def _start_line(self) -> str:
        return f"{self._version} {self._status} {self._reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
