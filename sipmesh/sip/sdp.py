"""SDP (RFC 8866): a line-preserving model with the edits a proxy or media relay needs.

The model keeps every line as received (type, value, line ending), so an unmodified
description serialises byte for byte, and unknown lines and attributes survive edits
in their place. Helpers rewrite connection addresses, media ports and ``a=rtcp``, read
and set direction attributes and drop ICE lines when a relay is inserted (what
rtpproxy/rtpengine do to the SDP they anchor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DIRECTIONS",
    "Connection",
    "MediaSection",
    "Rtcp",
    "SdpError",
    "SdpLine",
    "SessionDescription",
    "parse_sdp",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 §6.7

# RFC 8445 §15 and RFC 8840 (trickle): lines that describe the remote's ICE state and
# are wrong once a relay replaces the media address.
_ICE_ATTRIBUTES = frozenset(
    {
        "candidate",
        "remote-candidates",
        "end-of-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "ice-pacing",
    }
)

# RFC 8866 §5: field order inside a section, used to place a line we add.
_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "micbka"


class SdpError(ValueError):
    """The body is not SDP we can work with; the message says which line and why."""


@dataclass(frozen=True, slots=True)
class SdpLine:
    """One ``<type>=<value>`` line with the line ending it had (``\\r\\n``, ``\\n`` or '')."""

    type: str
    value: str
    eol: str = "\r\n"

    def __str__(self) -> str:
        return f"{self.type}={self.value}{self.eol}"

    @property
    def attribute(self) -> tuple[str, str | None] | None:
        """For ``a=`` lines, (name, value or None) per RFC 8866 §5.13."""
        if self.type != "a":
            return None
        name, sep, value = self.value.partition(":")
        return name, (value if sep else None)


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` field (RFC 8866 §5.7); ``address`` keeps any /ttl/count suffix apart."""

    nettype: str
    addrtype: str
    address: str
    suffix: str = ""  # "/127" or "/127/3" for multicast

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= needs '<nettype> <addrtype> <address>': {value!r}")
        address, slash, suffix = parts[2].partition("/")
        return cls(parts[0], parts[1], address, slash + suffix)

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """An ``a=rtcp`` attribute (RFC 3605): port and optional connection address."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str) -> Rtcp:
        parts = value.split()
        if not parts or not parts[0].isdigit() or len(parts) not in (1, 4):
            raise SdpError(f"bad a=rtcp value {value!r}")
        port = int(parts[0])
        if port > 65535:
            raise SdpError(f"a=rtcp port out of range: {value!r}")
        if len(parts) == 1:
            return cls(port)
        return cls(port, parts[1], parts[2], parts[3])

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


def _addrtype_for(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


class _Section:
    """Shared line-list behaviour of the session part and of media sections."""

    _order: str

    def __init__(self, lines: list[SdpLine]) -> None:
        self.lines = lines

    def _eol(self) -> str:
        return (self.lines[0].eol or "\r\n") if self.lines else "\r\n"

    def _find(self, type_: str) -> int | None:
        for i, line in enumerate(self.lines):
            if line.type == type_:
                return i
        return None

    def _insert(self, line: SdpLine) -> None:
        """Insert where RFC 8866 §5's field order puts it: after the last earlier field."""
        rank = self._order.find(line.type)
        pos = len(self.lines)
        if rank >= 0:
            for i, existing in enumerate(self.lines):
                r = self._order.find(existing.type)
                if r > rank:
                    pos = i
                    break
        # a new last line must still end with a line break
        if pos == len(self.lines) and self.lines and not self.lines[-1].eol:
            last = self.lines[-1]
            self.lines[-1] = SdpLine(last.type, last.value, "\r\n")
        self.lines.insert(pos, line)

    # -- attributes (RFC 8866 §5.13)
    def attributes(self, name: str) -> list[str | None]:
        """Values of every ``a=name[:value]`` line in order (None for property attributes)."""
        out: list[str | None] = []
        for line in self.lines:
            attr = line.attribute
            if attr is not None and attr[0] == name:
                out.append(attr[1])
        return out

    def has_attribute(self, name: str) -> bool:
        return bool(self.attributes(name))

    def add_attribute(self, name: str, value: str | None = None) -> None:
        text = name if value is None else f"{name}:{value}"
        self._insert(SdpLine("a", text, self._eol()))

    def remove_attributes(self, names: Iterable[str] | str) -> int:
        wanted = {names} if isinstance(names, str) else set(names)
        before = len(self.lines)
        kept = []
        for line in self.lines:
            attr = line.attribute
            if attr is not None and attr[0] in wanted:
                continue
            kept.append(line)
        self._fix_last_eol(kept)
        self.lines[:] = kept
        return before - len(self.lines)

    def _fix_last_eol(self, kept: list[SdpLine]) -> None:
        # Removing the final line must not leave the new last line without a break
        # if the removed one had one (keeps the body well-formed).
        if kept and self.lines and self.lines[-1] not in kept and not kept[-1].eol:
            last = kept[-1]
            kept[-1] = SdpLine(last.type, last.value, self.lines[-1].eol)

    # -- connection (RFC 8866 §5.7)
    @property
    def connection(self) -> Connection | None:
        i = self._find("c")
        return None if i is None else Connection.parse(self.lines[i].value)

    def set_connection(self, address: str, addrtype: str | None = None) -> None:
        """Replace (or add) the ``c=`` line, keeping nettype and any multicast suffix."""
        addrtype = addrtype or _addrtype_for(address)
        i = self._find("c")
        if i is None:
            self._insert(SdpLine("c", f"IN {addrtype} {address}", self._eol()))
            return
        old = Connection.parse(self.lines[i].value)
        new = Connection(old.nettype, addrtype, address, old.suffix)
        self.lines[i] = SdpLine("c", str(new), self.lines[i].eol)

    # -- direction (RFC 8866 §6.7)
    @property
    def direction(self) -> str | None:
        """The direction attribute written in this section, or None if there is none."""
        for line in self.lines:
            attr = line.attribute
            if attr is not None and attr[1] is None and attr[0] in DIRECTIONS:
                return attr[0]
        return None

    def set_direction(self, direction: str | None) -> None:
        """Replace the direction attribute; None removes it."""
        if direction is not None and direction not in DIRECTIONS:
            raise SdpError(f"unknown direction {direction!r}")
        for i, line in enumerate(self.lines):
            attr = line.attribute
            if attr is not None and attr[1] is None and attr[0] in DIRECTIONS:
                if direction is None:
                    self.remove_attributes(attr[0])
                else:
                    self.lines[i] = SdpLine("a", direction, line.eol)
                    # any further (contradictory) direction lines go
                    rest = [
                        x
                        for x in self.lines[i + 1 :]
                        if not (x.attribute and x.attribute[1] is None and x.value in DIRECTIONS)
                    ]
                    self.lines[i + 1 :] = rest
                return
        if direction is not None:
            self.add_attribute(direction)

    def remove_ice(self) -> int:
        """Drop ICE candidates and credentials (RFC 8445 §15); returns lines removed."""
        return self.remove_attributes(_ICE_ATTRIBUTES)


class MediaSection(_Section):
    """One ``m=`` section (RFC 8866 §5.14); ``lines[0]`` is the m= line."""

    _order = _MEDIA_ORDER

    def _m_parts(self) -> list[str]:
        return self.lines[0].value.split(" ")

    @property
    def media(self) -> str:
        return self._m_parts()[0]

    @property
    def port(self) -> int:
        return int(self._m_parts()[1].partition("/")[0])

    @property
    def port_count(self) -> int | None:
        _, slash, count = self._m_parts()[1].partition("/")
        return int(count) if slash else None

    def set_port(self, port: int) -> None:
        if not 0 <= port <= 65535:
            raise SdpError(f"port out of range: {port}")
        parts = self._m_parts()
        _, slash, count = parts[1].partition("/")
        parts[1] = f"{port}{slash}{count}"
        self.lines[0] = SdpLine("m", " ".join(parts), self.lines[0].eol)

    @property
    def proto(self) -> str:
        return self._m_parts()[2]

    @property
    def formats(self) -> list[str]:
        return [f for f in self._m_parts()[3:] if f]

    @property
    def rtcp(self) -> Rtcp | None:
        values = self.attributes("rtcp")
        if not values or values[0] is None:
            return None
        return Rtcp.parse(values[0])

    def set_rtcp(self, port: int, address: str | None = None, addrtype: str | None = None) -> None:
        """Set ``a=rtcp`` (RFC 3605), replacing an existing one in place."""
        if address is None:
            value = Rtcp(port)
        else:
            value = Rtcp(port, "IN", addrtype or _addrtype_for(address), address)
        for i, line in enumerate(self.lines):
            attr = line.attribute
            if attr is not None and attr[0] == "rtcp":
                self.lines[i] = SdpLine("a", f"rtcp:{value}", line.eol)
                return
        self.add_attribute("rtcp", str(value))

    def remove_rtcp(self) -> int:
        return self.remove_attributes("rtcp")

    @property
    def rtcp_mux(self) -> bool:
        """RTP and RTCP share a port (RFC 5761 §5.1.1)."""
        return self.has_attribute("rtcp-mux")


class SessionDescription(_Section):
    """A parsed SDP body: session-level lines plus media sections."""

    _order = _SESSION_ORDER

    def __init__(self, lines: list[SdpLine], media: list[MediaSection], trailer: str = "") -> None:
        super().__init__(lines)
        self.media = media
        self.trailer = trailer  # blank lines after the last line, kept verbatim

    def __str__(self) -> str:
        parts = [str(line) for line in self.lines]
        for m in self.media:
            parts.extend(str(line) for line in m.lines)
        parts.append(self.trailer)
        return "".join(parts)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")

    @property
    def origin_address(self) -> str | None:
        """The unicast address of ``o=`` (RFC 8866 §5.2)."""
        i = self._find("o")
        if i is None:
            return None
        parts = self.lines[i].value.split()
        return parts[5] if len(parts) == 6 else None

    def set_origin_address(self, address: str, addrtype: str | None = None) -> None:
        i = self._find("o")
        if i is None:
            raise SdpError("no o= line")
        parts = self.lines[i].value.split()
        if len(parts) != 6:
            raise SdpError(f"malformed o= line: {self.lines[i].value!r}")
        parts[4] = addrtype or _addrtype_for(address)
        parts[5] = address
        self.lines[i] = SdpLine("o", " ".join(parts), self.lines[i].eol)

    def media_connection(self, media: MediaSection) -> Connection | None:
        """The connection that applies to ``media``: its own c=, else the session's."""
        return media.connection or self.connection

    def effective_direction(self, media: MediaSection) -> str:
        """Media-level direction, else session-level, else sendrecv (RFC 8866 §6.7)."""
        return media.direction or self.direction or "sendrecv"

    def set_all_connections(self, address: str, addrtype: str | None = None) -> None:
        """Point every c= line (session and media) at ``address``; what a relay does."""
        if self._find("c") is not None or any(m.connection is None for m in self.media):
            self.set_connection(address, addrtype)
        for m in self.media:
            if m.connection is not None:
                m.set_connection(address, addrtype)

    def remove_ice(self) -> int:
        return super().remove_ice() + sum(m.remove_ice() for m in self.media)


def _split_lines(text: str) -> tuple[list[tuple[str, str]], str]:
    """Split into (content, eol) pairs; trailing blank lines are returned as a trailer."""
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    while pos < n:
        nl = text.find("\n", pos)
        if nl < 0:
            out.append((text[pos:], ""))
            break
        end = nl
        eol = "\n"
        if end > pos and text[end - 1] == "\r":
            end -= 1
            eol = "\r\n"
        out.append((text[pos:end], eol))
        pos = nl + 1
    trailer_start = len(out)
    while trailer_start > 0 and out[trailer_start - 1][0] == "":
        trailer_start -= 1
    trailer = "".join(c + e for c, e in out[trailer_start:])
    return out[:trailer_start], trailer


def _check_m_line(value: str, lineno: int) -> None:
    parts = value.split(" ")
    if len(parts) < 3 or not all(parts[:3]):
        raise SdpError(f"line {lineno}: m= needs '<media> <port> <proto> <fmt>…': {value!r}")
    port, slash, count = parts[1].partition("/")
    if not port.isdigit() or int(port) > 65535 or (slash and not count.isdigit()):
        raise SdpError(f"line {lineno}: bad port in m= line: {value!r}")


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpError` naming the offending line.

    Lenient where real peers are (LF-only line ends, missing t=, unknown line types),
    strict where an edit would be unsafe (no v= first, lines without ``x=``, bad m=/c=).
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    raw_lines, trailer = _split_lines(text)
    if not raw_lines:
        raise SdpError("empty SDP body")
    session: list[SdpLine] = []
    media: list[MediaSection] = []
    for lineno, (content, eol) in enumerate(raw_lines, start=1):
        if len(content) < 2 or content[1] != "=" or not content[0].isalpha():
            raise SdpError(f"line {lineno}: expected '<letter>=<value>', got {content!r}")
        line = SdpLine(content[0], content[2:], eol)
        if lineno == 1 and (line.type != "v" or line.value.strip() != "0"):
            raise SdpError(f"line 1: SDP must start with 'v=0', got {content!r}")
        if line.type == "m":
            _check_m_line(line.value, lineno)
            media.append(MediaSection([line]))
        elif media:
            media[-1].lines.append(line)
        else:
            session.append(line)
        if line.type == "c":
            try:
                Connection.parse(line.value)
            except SdpError as exc:
                raise SdpError(f"line {lineno}: {exc}") from None
    return SessionDescription(session, media, trailer)
