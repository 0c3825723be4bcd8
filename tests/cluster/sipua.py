"""A minimal SIP user agent (callee) over UDP or one TCP connection.

Why not sipp: (1) sipp cannot register and then answer calls with other Call-IDs on
the same TCP connection, which is what proves RFC 5626-style flow reuse (the
REGISTER's connection is the only way to the user, so a call entering at another
edge must be handed to the edge holding it, Edge.Send); (2) a sipp UAS sends every
message of a call to the address the call's first message came from, while with
several edges the INVITE may come from one edge and the BYE from another: RFC 3581
§4 (the edges' Via carries rport) says to answer each request to its own source.

This UA registers with digest authentication (RFC 3261 §22) from the socket it then
answers on, and serves calls in a thread: INVITE → 200 with SDP, BYE → 200, other
requests → 200, ACK absorbed; it counts what it answered.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections import Counter

from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.digest import DigestChallenge, build_credentials


class UA:
    def __init__(
        self, edge_port: int, user: str, password: str, domain: str, transport: str = "udp"
    ) -> None:
        self.user, self.password, self.domain = user, password, domain
        self.transport = transport
        self.edge = ("127.0.0.1", edge_port)
        if transport == "tcp":
            self.sock = socket.create_connection(self.edge, timeout=10)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        self.local_port = int(self.sock.getsockname()[1])
        self._buffer = b""
        self._peer = self.edge  # where the last UDP datagram came from
        self.received: list[str] = []
        self.answered: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()

    def _send(self, text: str, to: tuple[str, int] | None = None) -> None:
        head, _, body = text.partition("\r\n\r\n")
        data = (head.replace("@LEN@", str(len(body.encode()))) + "\r\n\r\n" + body).encode()
        if self.transport == "tcp":
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, to or self.edge)

    def read(self, timeout: float) -> Request | Response:
        if self.transport == "udp":
            self.sock.settimeout(max(timeout, 0.01))
            data, self._peer = self.sock.recvfrom(65535)
            self.received.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
            return parse_message(data)
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = self._buffer[:end].decode(errors="replace")
                length = 0
                for line in head.split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() in ("content-length", "l"):
                        length = int(value.strip())
                total = end + 4 + length
                if len(self._buffer) >= total:
                    raw, self._buffer = self._buffer[:total], self._buffer[total:]
                    message = parse_message(raw)
                    self.received.append(raw.split(b"\r\n", 1)[0].decode())
                    return message
            elif self._buffer.strip(b"\r\n") == b"":
                self._buffer = b""  # keep-alive CRLFs (RFC 5626 §3.5.1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing for {self.user} within {timeout}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("edge closed the connection")
            self._buffer += chunk

    def _register(self, cseq: int, call_id: str, auth: str) -> None:
        port, user, dom = self.local_port, self.user, self.domain
        self._send(
            f"REGISTER sip:{dom} SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.transport.upper()} 127.0.0.1:{port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{dom}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{user}@{dom}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port};transport={self.transport}>\r\n"
            "Expires: 300\r\n" + auth + "Content-Length: 0\r\n\r\n"
        )

    def register(self, timeout: float = 10) -> int:
        call_id = secrets.token_hex(10)
        self._register(1, call_id, "")
        reply = self._final(timeout)
        if reply.status == 401:
            challenge = DigestChallenge.parse(reply.get("www-authenticate") or "")
            creds = build_credentials(
                challenge,
                username=self.user,
                password=self.password,
                method="REGISTER",
                uri=f"sip:{self.domain}",
            )
            self._register(2, call_id, f"Authorization: {creds.to_header()}\r\n")
            reply = self._final(timeout)
        return reply.status

    def serve(self) -> UA:
        """Answer calls in a background thread until close()."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    message = self.read(0.2)
                except (TimeoutError, OSError):
                    continue
                except Exception:
                    continue
                if isinstance(message, Request) and message.method != "ACK":
                    self._reply(message, 200, sdp=message.method == "INVITE")
                    self.answered[message.method] += 1

        self._thread = threading.Thread(target=loop, name=f"ua-{self.user}", daemon=True)
        self._thread.start()
        return self

    def _final(self, timeout: float) -> Response:
        while True:
            message = self.read(timeout)
            if isinstance(message, Response) and message.status >= 200:
                return message

    def answer_one_call(self, timeout: float = 20) -> list[str]:
        """Answer the next INVITE with 200, then the BYE; returns the methods seen."""
        seen: list[str] = []
        invite: Request | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.read(deadline - time.monotonic())
            if not isinstance(message, Request):
                continue
            seen.append(message.method)
            if message.method == "INVITE" and invite is None:
                invite = message
                self._reply(message, 200, sdp=True)
            elif message.method == "BYE":
                self._reply(message, 200)
                return seen
            elif message.method not in ("ACK", "INVITE"):
                self._reply(message, 200)
        raise TimeoutError(f"call not finished; seen {seen}")

    def _reply(self, request: Request, status: int, *, sdp: bool = False) -> None:
        lines = [f"SIP/2.0 {status} OK"]
        for name in ("via", "record-route"):
            lines += [f"{name.title()}: {v}" for v in request.get_all(name)]
        to = request.get("to") or ""
        if ";tag=" not in to:
            to += ";tag=ua" + secrets.token_hex(4)
        lines += [
            f"From: {request.get('from')}",
            f"To: {to}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.get('cseq')}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.local_port};transport={self.transport}>",
        ]
        body = ""
        if sdp:
            body = (
                "v=0\r\no=ua 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
            )
            lines.append("Content-Type: application/sdp")
        lines.append("Content-Length: @LEN@")
        # RFC 3581 §4: to the source of the request (every edge Via carries rport).
        self._send("\r\n".join(lines) + "\r\n\r\n" + body, to=self._peer)
