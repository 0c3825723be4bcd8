"""SIP capture at the edge's transport boundary (Kamailio's siptrace module).

The edge hands every received and sent message to :meth:`SipCapture.received` /
:meth:`SipCapture.sent` — but only when capture is configured at all (a HEP
destination or ``telemetry.sip_trace_db``); otherwise no capture object exists and
the transports do no work for it.

What is captured (``telemetry.capture_mode``, changeable at run time through the
key/value store, like ``kamcmd siptrace.status``):

- ``all``: every message (siptrace's global ``trace_on``);
- ``flagged``: only transactions and dialogs the routing script flagged — the
  transaction flag ``capture_transaction_flag`` is sip_trace_mode("t"), the flag
  ``capture_dialog_flag`` is sip_trace_mode("d") (every message with that Call-ID
  until the BYE is answered or ``capture_dialog_ttl`` passes);
- ``off``: nothing.

Each captured message becomes one HEP3 packet (capture id, optional auth key, the
Call-ID as correlation id) and/or one ``sip_trace`` row (Kamailio's columns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from sipmesh.observe.hep import HepPacket, encode_hep3, ip_proto
from sipmesh.state.db import Database
from sipmesh.state.kv import KVStore

__all__ = [
    "CAPTURE_MODE_KEY",
    "CaptureFlow",
    "CaptureSink",
    "CapturedFlow",
    "SipCapture",
    "set_capture_mode",
]

log = logging.getLogger("sipmesh.observe.capture")

#: KV key holding the cluster-wide capture mode ("all", "flagged", "off").
CAPTURE_MODE_KEY = "capture:mode"
MODES = ("off", "all", "flagged")
_POLL_EVERY = 2.0
_DB_BATCH = 256

# Header lines of interest, compact forms included (RFC 3261 §7.3.3: i = Call-ID).
_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_CSEQ = re.compile(rb"\r\ncseq[ \t]*:[ \t]*(\d+)[ \t]+([A-Za-z]+)", re.I)
_FROM_TAG = re.compile(rb"\r\n(?:from|f)[ \t]*:[^\r\n]*;[ \t]*tag=([^;\r\n> \t]+)", re.I)
_TO_TAG = re.compile(rb"\r\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag=([^;\r\n> \t]+)", re.I)
_FROM_USER = re.compile(rb"\r\n(?:from|f)[ \t]*:[^\r\n]*?sips?:([^@;>\r\n]+)@", re.I)


class CaptureFlow(Protocol):
    """What capture needs of a transport flow (sipmesh.edge.transport.base.Flow)."""

    @property
    def transport(self) -> str: ...

    @property
    def remote(self) -> tuple[str, int]: ...

    @property
    def local(self) -> tuple[str, int]: ...


class HepOut(Protocol):
    def send(self, packet: bytes) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _head(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 2]


def call_id_of(data: bytes) -> bytes:
    match = _CALL_ID.search(_head(data))
    return match.group(1).strip() if match else b""


class SipCapture:
    """Mirror of one edge's traffic to HEP and/or the sip_trace table."""

    def __init__(
        self,
        *,
        hep: HepOut | None = None,
        db: Database | None = None,
        open_db: Callable[[], Awaitable[Database]] | None = None,
        kv: KVStore | None = None,
        mode: str = "all",
        capture_id: int = 1,
        auth_key: str = "",
        transaction_flag: int = 22,
        dialog_flag: int = 23,
        dialog_ttl: float = 7200.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown capture mode {mode!r}")
        self._hep = hep
        self._db = db
        self._open_db = open_db
        self._own_db: Database | None = None
        self._kv = kv
        self.mode = mode
        self._capture_id = capture_id
        self._auth = auth_key.encode()
        self._tx_bit = 1 << transaction_flag
        self._dlg_bit = 1 << dialog_flag
        self._ttl = dialog_ttl
        self._clock = clock
        # Flagged work: (Call-ID, CSeq number) → expiry, Call-ID → expiry.
        self._transactions: dict[tuple[bytes, bytes], float] = {}
        self._dialogs: dict[bytes, float] = {}
        self._rows: list[tuple[object, ...]] = []
        self._flush: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.captured = 0

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self._open_db is not None and self._db is None:
            self._own_db = self._db = await self._open_db()
        if self._hep is not None:
            await self._hep.start()
        self._flush = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self._db is not None:
            self._tasks.append(loop.create_task(self._db_writer(), name="sip_trace writer"))
        if self._kv is not None:
            self._tasks.append(loop.create_task(self._poll_mode(), name="capture mode"))

    async def stop(self) -> None:
        if self._db is not None and self._rows:
            with contextlib.suppress(Exception):
                await self._write_rows()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._hep is not None:
            await self._hep.stop()
        if self._own_db is not None:
            await self._own_db.close()

    # -- run-time switches --------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown capture mode {mode!r}")
        self.mode = mode

    def on_flags(self, flags: int, request: bytes, flow: CaptureFlow, received_at: float) -> None:
        """A routing decision's transaction flags: start a flagged capture.

        Like sip_trace() in request_route, the request that was just routed is
        captured too (it arrived before anyone knew it was to be traced).
        """
        if self.mode != "flagged" or not flags & (self._tx_bit | self._dlg_bit):
            return
        call_id = call_id_of(request)
        if not call_id:
            return
        now = self._clock()
        if flags & self._dlg_bit:
            self._dialogs[call_id] = now + self._ttl
        else:
            cseq = _CSEQ.search(_head(request))
            if cseq is not None:
                self._transactions[(call_id, cseq.group(1))] = now + 64.0
        self._capture(request, flow.remote, flow.local, flow.transport, received_at, "in")

    # -- the transport boundary ------------------------------------------------------------
    def received(self, data: bytes, flow: CaptureFlow, at: float) -> None:
        if self.mode == "all" or (self.mode == "flagged" and self._flagged(data)):
            self._capture(data, flow.remote, flow.local, flow.transport, at, "in")

    def sent(self, data: bytes, flow: CaptureFlow) -> None:
        if self.mode == "all" or (self.mode == "flagged" and self._flagged(data)):
            self._capture(data, flow.local, flow.remote, flow.transport, self._clock(), "out")

    def _flagged(self, data: bytes) -> bool:
        if not self._dialogs and not self._transactions:
            return False  # the usual case: one dict check, no parsing
        head = _head(data)
        match = _CALL_ID.search(head)
        if match is None:
            return False
        call_id = match.group(1).strip()
        now = self._clock()
        expiry = self._dialogs.get(call_id)
        if expiry is not None:
            if expiry < now:
                del self._dialogs[call_id]
                return False
            cseq = _CSEQ.search(head)
            if cseq is not None and cseq.group(2).upper() == b"BYE" and data[:4] == b"SIP/":
                # The BYE is answered: the dialog ends; a short tail keeps retransmissions.
                self._dialogs[call_id] = min(expiry, now + 32.0)
            return True
        if self._transactions:
            cseq = _CSEQ.search(head)
            if cseq is not None:
                key = (call_id, cseq.group(1))
                until = self._transactions.get(key)
                if until is not None:
                    if until >= now:
                        return True
                    del self._transactions[key]
        return False

    def _capture(
        self,
        data: bytes,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
        at: float,
        direction: str,
    ) -> None:
        self.captured += 1
        call_id = call_id_of(data)
        if self._hep is not None:
            try:
                packet = encode_hep3(
                    HepPacket(
                        src=src,
                        dst=dst,
                        payload=data,
                        timestamp=at,
                        proto=ip_proto(transport),
                        capture_id=self._capture_id,
                        auth_key=self._auth,
                        correlation_id=call_id,
                    )
                )
            except ValueError:
                packet = b""
            if packet:
                self._hep.send(packet)
        if self._db is not None:
            self._rows.append(_trace_row(data, call_id, src, dst, transport, at, direction))
            if len(self._rows) >= _DB_BATCH and self._flush is not None:
                self._flush.set()

    # -- sip_trace table -----------------------------------------------------------------
    async def _db_writer(self) -> None:
        assert self._flush is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush.wait(), 0.5)
            self._flush.clear()
            if self._rows:
                try:
                    await self._write_rows()
                except Exception as exc:  # the database is down: drop, never block SIP
                    log.debug("sip_trace rows dropped: %s", exc)

    async def _write_rows(self) -> None:
        assert self._db is not None
        rows, self._rows = self._rows, []
        await self._db.executemany(
            "INSERT INTO sip_trace (time_stamp, time_us, callid, traced_user, msg, method, "
            "status, fromip, toip, fromtag, totag, direction) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            rows,
        )

    async def _poll_mode(self) -> None:
        assert self._kv is not None
        while True:
            try:
                value = await self._kv.get(CAPTURE_MODE_KEY)
            except Exception as exc:  # the store is down: keep the mode we have
                log.debug("capture mode not read: %s", exc)
            else:
                if value is not None and value.decode() in MODES:
                    self.mode = value.decode()
            await asyncio.sleep(_POLL_EVERY)


def _trace_row(
    data: bytes,
    call_id: bytes,
    src: tuple[str, int],
    dst: tuple[str, int],
    transport: str,
    at: float,
    direction: str,
) -> tuple[object, ...]:
    """A sip_trace row as Kamailio's siptrace writes it (fromip "udp:1.2.3.4:5060")."""
    head = _head(data)
    first = head.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    if first.startswith("SIP/"):
        parts = first.split(" ", 2)
        method_match = _CSEQ.search(head)
        method = method_match.group(2).decode() if method_match else ""
        status = parts[1] if len(parts) > 1 else ""
    else:
        method, status = first.split(" ", 1)[0], ""
    stamp = datetime.fromtimestamp(at, UTC).replace(tzinfo=None)
    from_tag = _FROM_TAG.search(head)
    to_tag = _TO_TAG.search(head)
    user = _FROM_USER.search(head)
    return (
        stamp.replace(microsecond=0),
        stamp.microsecond,
        call_id.decode("utf-8", "replace")[:255],
        user.group(1).decode("utf-8", "replace")[:255] if user else "",
        data.decode("utf-8", "replace"),
        method[:50],
        status,
        _addr(transport, src)[:64],
        _addr(transport, dst)[:64],
        from_tag.group(1).decode("utf-8", "replace")[:128] if from_tag else "",
        to_tag.group(1).decode("utf-8", "replace")[:128] if to_tag else "",
        direction,
    )


def _addr(transport: str, addr: tuple[str, int]) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{transport.lower()}:{host}:{addr[1]}"


async def set_capture_mode(kv: KVStore, mode: str) -> None:
    """Switch capture on every edge (picked up within a few seconds)."""
    if mode not in MODES:
        raise ValueError(f"unknown capture mode {mode!r}; one of {', '.join(MODES)}")
    await kv.set(CAPTURE_MODE_KEY, mode.encode())


class CapturedFlow(NamedTuple):
    """A flow as capture sees it, for messages whose transport flow is not at hand."""

    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]


class _Sink(Protocol):
    def on_message(self, data: bytes, flow: Any, received_at: float) -> None: ...

    def on_flow_closed(self, flow: Any) -> None: ...


class CaptureSink:
    """Sits between the transports and the edge core: captures, then hands on."""

    def __init__(self, sink: _Sink, capture: SipCapture) -> None:
        self._sink = sink
        self._capture = capture

    def on_message(self, data: bytes, flow: Any, received_at: float) -> None:
        self._capture.received(data, flow, received_at)
        self._sink.on_message(data, flow, received_at)

    def on_flow_closed(self, flow: Any) -> None:
        self._sink.on_flow_closed(flow)
