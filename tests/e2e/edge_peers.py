"""Peers for the edge end-to-end tests (issue 4): processes, sipsak, and a small UA.

sipp 3.6 here is built without OpenSSL and has no WebSocket transport, and sipsak's
GnuTLS client loses the reply it has already decrypted; so TLS and WebSocket peers
are :class:`MiniUA` below: a user agent that keeps one connection to the edge open
(as RFC 7118 §5 clients and TLS phones do), registers answering the digest challenge
with sipmesh.sip.digest, and calls or answers calls (RFC 3261 §12-§15).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from sipmesh.sip import NameAddr, Request, Response, parse_message
from sipmesh.sip.digest import DigestChallenge, build_credentials
from sipmesh.sip.framer import MessageReceived, StreamFramer
from sipmesh.sip.stateless import make_response
from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process

DOMAIN = "sipmesh.test"
USERS = (("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw"))
SDP = (
    b"v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


# -- processes ---------------------------------------------------------------------------


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/::1/localhost (docs/edge.md, TLS setup)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def edge_process(
    workdir: Path,
    *,
    name: str = "core",
    targets: str = "all",
    transports: Sequence[str] = ("udp", "tcp"),
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    users: Sequence[tuple[str, str]] = USERS,
    provision: bool = True,
) -> SipmeshProcess:
    """A started `sipmesh serve`, one port per stream transport (udp and tcp share one).

    ``proc.extra[transport]`` is the port of each listener.
    """
    full_env = dict(env or {})
    if any(t in ("tls", "wss") for t in transports):
        cert, key = make_cert(workdir)
        full_env.setdefault("SIPMESH_EDGE__TLS_CERTIFICATE", str(cert))
        full_env.setdefault("SIPMESH_EDGE__TLS_PRIVATE_KEY", str(key))
    shown = f"[{host}]" if ":" in host else host
    base = free_port(socket.SOCK_DGRAM, host)
    ports = {t: base if t in ("udp", "tcp") else free_port(host=host) for t in transports}
    args = ["--domain", DOMAIN]
    for transport, port in ports.items():
        args += ["--listen", f"{transport}:{shown}:{port}"]
    proc = make_process(
        name, workdir, targets=targets, transports=(), env=full_env, extra_args=args
    )
    proc.sip_port = base
    proc.extra.update(ports)
    if provision:
        for user, password in users:
            ctl("--db", proc.env["SIPMESH_DB"], "add", f"{user}@{DOMAIN}", password)
    proc.start()
    try:
        proc.wait_ready()
    except BaseException:
        proc.kill()
        raise
    return proc


def sipsak_options(host: str, port: int, transport: str = "udp") -> str:
    """sipsak's OPTIONS to the server itself; returns the status line it printed.

    The server's address goes in as outbound proxy (-p): sipsak 0.9.8 cuts a
    five-digit port out of the R-URI it writes, so the R-URI carries no port.
    """
    assert shutil.which("sipsak"), "sipsak is installed in CI"
    shown = f"[{host}]" if ":" in host else host
    cmd = ["sipsak", "-vv", "-s", f"sip:{shown}", "-p", f"{shown}:{port}"]
    if transport != "udp":
        cmd += ["-E", transport]
    out = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    for line in text.splitlines():
        if line.strip().startswith("SIP/2.0 "):
            return line.strip()
    return text


def sipp_trace(path: Path) -> list[tuple[str, str]]:
    """(direction line, message) of each entry of a sipp -trace_msg file, in order."""
    out = []
    for chunk in path.read_text(errors="replace").split("-" * 47 + " ")[1:]:
        lines = chunk.split("\n")
        if len(lines) > 2:
            out.append((lines[1], "\n".join(lines[2:]).strip("\n")))
    return out


def received_requests(path: Path, method: str) -> list[str]:
    """Requests of ``method`` that sipp logged as received."""
    return [
        message
        for kind, message in sipp_trace(path)
        if "message received" in kind and message.startswith(f"{method} ")
    ]


def header_lines(message: str, name: str) -> list[str]:
    """The values of header ``name`` in a traced message, one per line as sipp prints."""
    values = []
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


# -- a small user agent over TLS or WebSocket -----------------------------------------


class Channel(Protocol):
    transport: str  # Via transport token: TLS, WS, TCP
    local: tuple[str, int]

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self) -> None: ...


class WsChannel:
    """One WebSocket connection with the ``sip`` subprotocol (RFC 7118 §4)."""

    transport = "WS"

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        sock = conn.transport.get_extra_info("sockname")
        self.local = (str(sock[0]), int(sock[1]))

    @classmethod
    async def open(cls, uri: str) -> WsChannel:
        conn = await ws_connect(uri, subprotocols=["sip"], open_timeout=10)  # type: ignore[list-item]
        assert conn.subprotocol == "sip", "the edge accepts the sip subprotocol"
        return cls(conn)

    async def send(self, data: bytes) -> None:
        await self._conn.send(data.decode())  # one message per text frame (§5)

    async def recv(self) -> bytes:
        frame = await self._conn.recv()
        return frame.encode() if isinstance(frame, str) else frame

    async def close(self) -> None:
        await self._conn.close()


class StreamChannel:
    """A TCP or TLS connection, messages framed by Content-Length (RFC 3261 §18.3)."""

    def __init__(
        self, transport: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.transport = transport
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("sockname")
        self.local = (str(sock[0]), int(sock[1]))
        self._framer = StreamFramer()
        self._ready: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int, tls: bool) -> StreamChannel:
        ctx = None
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # a self-signed test certificate
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), 10)
        return cls("TLS" if tls else "TCP", reader, writer)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self) -> bytes:
        while not self._ready:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("closed by the edge")
            for event in self._framer.feed(data):
                if isinstance(event, MessageReceived):
                    self._ready.append(event.raw)
        return self._ready.pop(0)

    async def close(self) -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2)
        except (OSError, TimeoutError, ssl.SSLError):
            pass


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    remote_target: str
    route_set: list[str]
    local_uri: str
    remote_uri: str
    cseq: int = 1
    record_routes: list[str] = field(default_factory=list)


class MiniUA:
    """A user agent on one channel to the edge; every request goes over it."""

    def __init__(self, channel: Channel, user: str, password: str) -> None:
        self.channel = channel
        self.user, self.password = user, password
        self.aor = f"sip:{user}@{DOMAIN}"
        self.tag = secrets.token_hex(4)
        host = f"{secrets.token_hex(4)}.invalid" if channel.transport == "WS" else None
        self.sent_by = host or f"{channel.local[0]}:{channel.local[1]}"
        self.contact = f"<sip:{user}@{self.sent_by};transport={channel.transport.lower()}>"
        self.received: list[Request | Response] = []
        self._inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = parse_message(await self.channel.recv())
                self.received.append(message)
                await self._inbox.put(message)
        except (ConnectionError, asyncio.CancelledError, OSError):
            return
        except Exception:  # the websockets close exception and the like end the reader
            return

    async def close(self) -> None:
        self._reader.cancel()
        await self.channel.close()

    def _via(self) -> str:
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        return f"SIP/2.0/{self.channel.transport} {self.sent_by};branch={branch};rport"

    async def next_message(self, timeout: float = 10) -> Request | Response:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def expect_request(self, method: str, timeout: float = 10) -> Request:
        while True:
            message = await self.next_message(timeout)
            if isinstance(message, Request) and message.method == method:
                return message

    async def final_response(self, call_id: str, seq: int, timeout: float = 10) -> Response:
        while True:
            message = await self.next_message(timeout)
            if (
                isinstance(message, Response)
                and message.status >= 200
                and message.call_id == call_id
                and message.cseq.seq == seq
            ):
                return message

    def request(
        self,
        method: str,
        uri: str,
        *,
        to: str,
        call_id: str,
        seq: int,
        from_tag: str | None = None,
        to_tag: str = "",
        routes: Sequence[str] = (),
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        via: str | None = None,
    ) -> Request:
        headers = [("Via", via or self._via()), ("Max-Forwards", "70")]
        headers += [("Route", r) for r in routes]
        headers += [
            ("From", f"<{self.aor}>;tag={from_tag or self.tag}"),
            ("To", f"<{to}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {'INVITE' if method == 'ACK' and seq == 0 else method}"),
            ("Contact", self.contact),
            *extra,
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers.append(("Content-Length", str(len(body))))
        return Request(method, uri, headers, body)

    async def send(self, message: Request | Response) -> None:
        await self.channel.send(bytes(message))

    async def _authed(self, request: Request, response: Response, seq: int) -> Request:
        """The request again with credentials for a 401/407 challenge (RFC 3261 §22.2)."""
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        reply = "Authorization" if response.status == 401 else "Proxy-Authorization"
        challenge = DigestChallenge.parse(response.get(name) or "")
        creds = build_credentials(
            challenge,
            username=self.user,
            password=self.password,
            method=request.method,
            uri=request.uri,
        )
        again = parse_message(bytes(request))
        assert isinstance(again, Request)
        again.replace_first("Via", self._via())
        again.set("CSeq", f"{seq} {request.method}")
        again.add(reply, creds.to_header())
        return again

    async def register(self, expires: int = 300) -> Response:
        call_id = secrets.token_hex(8)
        first = self.request(
            "REGISTER",
            f"sip:{DOMAIN}",
            to=self.aor,
            call_id=call_id,
            seq=1,
            extra=[("Expires", str(expires))],
        )
        await self.send(first)
        response = await self.final_response(call_id, 1)
        if response.status in (401, 407):
            second = await self._authed(first, response, 2)
            await self.send(second)
            response = await self.final_response(call_id, 2)
        return response

    async def options(self, uri: str) -> Response:
        call_id = secrets.token_hex(8)
        await self.send(self.request("OPTIONS", uri, to=uri, call_id=call_id, seq=1))
        return await self.final_response(call_id, 1)

    async def answer(self, *, ring: bool = True, timeout: float = 15) -> tuple[Request, Dialog]:
        """Wait for an INVITE, answer 180 and 200 (with its Record-Route), wait for ACK."""
        invite = await self.expect_request("INVITE", timeout)
        tag = secrets.token_hex(4)
        rr = [("Record-Route", v) for v in invite.get_all("Record-Route")]
        contact = [("Contact", self.contact)]
        if ring:
            await self.send(make_response(invite, 180, to_tag=tag, headers=rr + contact))
        ok = make_response(
            invite,
            200,
            to_tag=tag,
            headers=[*rr, *contact, ("Content-Type", "application/sdp")],
            body=SDP,
        )
        await self.send(ok)
        remote = invite.contacts[0].uri if invite.contacts else invite.from_.uri
        dialog = Dialog(
            invite.call_id,
            tag,
            invite.from_.tag or "",
            str(remote),
            [str(r.uri) for r in invite.record_routes],
            str(invite.to.uri),
            str(invite.from_.uri),
            record_routes=invite.get_all("Record-Route"),
        )
        await self.expect_request("ACK", timeout)
        return invite, dialog

    async def call(self, callee: str, timeout: float = 15) -> tuple[Response, Dialog]:
        """INVITE ``callee`` (answering a 407), ACK the 200; returns it and the dialog."""
        call_id = secrets.token_hex(8)
        invite = self.request("INVITE", callee, to=callee, call_id=call_id, seq=1, body=SDP)
        await self.send(invite)
        response = await self.final_response(call_id, 1, timeout)
        seq = 1
        if response.status == 407:
            ack = self.request(
                "ACK",
                callee,
                to=callee,
                call_id=call_id,
                seq=1,
                to_tag=response.to.tag or "",
                via=invite.get("Via"),
            )
            ack.set("CSeq", "1 ACK")
            await self.send(ack)
            seq = 2
            invite = await self._authed(invite, response, seq)
            await self.send(invite)
            response = await self.final_response(call_id, seq, timeout)
        assert response.status == 200, f"call ended with {response.status}"
        remote = response.contacts[0].uri
        dialog = Dialog(
            call_id,
            self.tag,
            response.to.tag or "",
            str(remote),
            [str(r.uri) for r in reversed(response.record_routes)],
            callee,
            callee,
            cseq=seq,
            record_routes=response.get_all("Record-Route"),
        )
        ack = self.request(
            "ACK",
            dialog.remote_target,
            to=callee,
            call_id=call_id,
            seq=seq,
            to_tag=dialog.remote_tag,
            routes=[f"<{r}>" for r in dialog.route_set],
        )
        ack.set("CSeq", f"{seq} ACK")
        await self.send(ack)
        return response, dialog

    async def bye(self, dialog: Dialog, timeout: float = 10) -> Response:
        """BYE within ``dialog`` along its route set (RFC 3261 §12.2.1.1, §15.1.1)."""
        dialog.cseq += 1
        bye = self.request(
            "BYE",
            dialog.remote_target,
            to=dialog.remote_uri,
            call_id=dialog.call_id,
            seq=dialog.cseq,
            from_tag=dialog.local_tag,
            to_tag=dialog.remote_tag,
            routes=[f"<{r}>" for r in dialog.route_set],
        )
        bye.set("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}")
        await self.send(bye)
        return await self.final_response(dialog.call_id, dialog.cseq, timeout)

    async def answer_bye(self, timeout: float = 15) -> Request:
        bye = await self.expect_request("BYE", timeout)
        await self.send(make_response(bye, 200))
        return bye


def nameaddr_params(value: str) -> tuple[str, dict[str, str]]:
    """(host:port, uri params) of a Record-Route value."""
    uri = NameAddr.parse(value).uri
    text = str(uri)
    hostport = text.split("sip:", 1)[1].split(";", 1)[0]
    params: dict[str, str] = {}
    for part in text.split(";")[1:]:
        key, _, val = part.partition("=")
        params[key.lower()] = val
    return hostport, params


# -- raw UDP/TCP peers -------------------------------------------------------------------


class UdpPeer:
    """A UDP socket bound to ``ip`` (127.0.0.x: another source on loopback)."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.local = self.sock.getsockname()[:2]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None

    def response(self, timeout: float, status: int | None = None) -> Response | None:
        """The next response (of ``status`` if given) within ``timeout``, else None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.recv(left)
            if data is None:
                return None
            message = parse_message(data)
            if isinstance(message, Response) and (status is None or message.status == status):
                return message
        return None

    def close(self) -> None:
        self.sock.close()


def options_request(
    local: tuple[str, int], transport: str = "UDP", call_id: str | None = None
) -> bytes:
    """OPTIONS to the server itself (no user part, R-URI without port: myself by host)."""
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    return (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{local[1]};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        f"From: <sip:probe@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{DOMAIN}>\r\n"
        f"Call-ID: {call_id or secrets.token_hex(8)}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def options_ok(address: tuple[str, int], ip: str = "127.0.0.1", timeout: float = 3) -> bool:
    """One OPTIONS over UDP from ``ip``: True when the edge answered 200."""
    peer = UdpPeer(ip)
    try:
        peer.send(options_request(peer.local), address)
        response = peer.response(timeout)
        return response is not None and response.status == 200
    finally:
        peer.close()
