"""rtpengine's "ng" control protocol over UDP, so a stock Kamailio/OpenSIPS
rtpengine module can drive sipmesh's relay.

Each datagram is ``<cookie> <bencoded dictionary>``; the reply repeats the cookie.
The dictionary's ``command`` is one of ping, offer, answer, delete, query, list;
failures are answered ``{"result": "error", "error-reason": "..."}``. A request
repeated with the same cookie (the client retransmits after its timeout) gets the
cached reply instead of being run twice, as rtpengine does.

The server translates ng dictionaries into the gRPC contract's messages and calls
the service through the MediaRelayClient Protocol, so both control paths run the
same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import OrderedDict
from typing import Any, cast

from sipmesh.clients.errors import ServiceError
from sipmesh.clients.interfaces import MediaRelayClient
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2
from sipmesh.media_relay.bencode import BencodeError, decode, encode

__all__ = ["NgClient", "NgError", "NgServer", "ng_request", "ng_to_flags"]

log = logging.getLogger("sipmesh.media_relay")

_CACHE_SECONDS = 30.0
_CACHE_MAX = 4096


class NgError(Exception):
    """A malformed or failed ng exchange (client side)."""


def _text(value: Any, key: str = "") -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise ValueError(f"'{key}' must be a string")


def _texts(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_text(v, key) for v in value]
    return [_text(value, key)]


def ng_to_flags(args: dict[str, Any]) -> list[str]:
    """The ng keys that are rtpengine flags, as the flag strings of the gRPC contract."""
    flags = [f.strip() for f in _texts(args.get("flags"), "flags")]
    flags += [f"replace-{r}" for r in _texts(args.get("replace"), "replace")]
    if "ICE" in args:
        flags.append(f"ICE={_text(args['ICE'], 'ICE')}")
    family = args.get("address family") or args.get("address-family")
    if family is not None:
        flags.append(f"address-family={_text(family, 'address family')}")
    media_address = args.get("media address") or args.get("media-address")
    if media_address is not None:
        flags.append(f"media-address={_text(media_address, 'media address')}")
    return [f for f in flags if f]


def _key(args: dict[str, Any], *, to_tag: bool = True) -> media_relay_pb2.MediaSessionKey:
    call_id = _text(args.get("call-id", b""), "call-id")
    if not call_id:
        raise ValueError("'call-id' is missing")
    return media_relay_pb2.MediaSessionKey(
        call_id=call_id,
        from_tag=_text(args.get("from-tag", b""), "from-tag"),
        to_tag=_text(args.get("to-tag", b""), "to-tag") if to_tag else "",
        via_branch=_text(args.get("via-branch", b""), "via-branch"),
    )


def _source(args: dict[str, Any], peer: tuple[Any, ...]) -> common_pb2.Address:
    received = args.get("received-from") or args.get("received from")
    if isinstance(received, list) and len(received) == 2:
        return common_pb2.Address(host=_text(received[1], "received-from"))
    return common_pb2.Address()


def _sdp(args: dict[str, Any]) -> bytes:
    sdp = args.get("sdp")
    if not isinstance(sdp, bytes) or not sdp:
        raise ValueError("'sdp' is missing")
    return sdp


def _endpoint(addr: common_pb2.Address) -> dict[str, Any]:
    family = "IP6" if ":" in addr.host else "IP4"
    return {"family": family, "address": addr.host, "port": addr.port}


def stats_to_ng(stats: media_relay_pb2.SessionStats) -> dict[str, Any]:
    """A query reply in rtpengine's shape (created, tags → medias → streams, totals)."""
    tags: dict[str, Any] = {}
    for leg in stats.legs:
        medias = []
        for s in leg.streams:
            stream: dict[str, Any] = {
                "local port": s.local_rtp.port,
                "endpoint": _endpoint(s.peer),
                "latched": int(s.latched),
                "stats": {"packets": s.packets, "bytes": s.bytes, "errors": s.errors},
                "last packet": int(s.last_packet_at),
            }
            medias.append({"index": s.index + 1, "type": s.media_type, "streams": [stream]})
        tags[leg.tag or "-"] = {"tag": leg.tag, "medias": medias}
    totals = {"packets": stats.packets, "bytes": stats.bytes, "errors": stats.errors}
    return {
        "result": "ok",
        "created": int(stats.created_at),
        "last signal": int(stats.last_signal_at),
        "last packet": int(stats.last_packet_at),
        "tags": tags,
        "totals": {"RTP": totals, "RTCP": {"packets": 0, "bytes": 0, "errors": 0}},
    }


async def ng_request(
    service: MediaRelayClient, args: dict[str, Any], peer: tuple[Any, ...] = ()
) -> dict[str, Any]:
    """Run one decoded ng command against ``service``; always returns a reply dict."""
    try:
        command = _text(args.get("command", b""), "command").lower()
        if command == "ping":
            return {"result": "pong"}
        if command in ("offer", "answer"):
            key = _key(args)
            sdp = _sdp(args)
            flags = ng_to_flags(args)
            source = _source(args, peer)
            if command == "offer":
                reply = await service.offer(
                    media_relay_pb2.OfferRequest(key=key, sdp=sdp, flags=flags, source=source)
                )
            else:
                if not key.to_tag:
                    raise ValueError("'to-tag' is missing")
                reply = await service.answer(
                    media_relay_pb2.AnswerRequest(key=key, sdp=sdp, flags=flags, source=source)
                )
            out: dict[str, Any] = {"result": "ok", "sdp": reply.sdp}
            if reply.warnings:
                out["warning"] = "; ".join(reply.warnings)
            return out
        if command == "delete":
            deleted = await service.delete(media_relay_pb2.DeleteRequest(key=_key(args)))
            return stats_to_ng(deleted.stats)
        if command == "query":
            queried = await service.query(media_relay_pb2.QueryRequest(key=_key(args)))
            return stats_to_ng(queried.stats)
        if command == "list":
            limit = args.get("limit", 32)
            if not isinstance(limit, int) or limit < 0:
                raise ValueError("'limit' must be a non-negative integer")
            listed = await service.list_sessions(media_relay_pb2.ListSessionsRequest(limit=limit))
            return {"result": "ok", "calls": [s.key.call_id for s in listed.sessions]}
        if not command:
            raise ValueError("'command' is missing")
        return {"result": "error", "error-reason": f"Unrecognized command {command!r}"}
    except ServiceError as exc:
        return {"result": "error", "error-reason": exc.message}
    except ValueError as exc:
        return {"result": "error", "error-reason": f"malformed request: {exc}"}


class NgServer(asyncio.DatagramProtocol):
    """The UDP listener. Create with :meth:`listen`."""

    def __init__(self, service: MediaRelayClient) -> None:
        self._service = service
        self._transport: asyncio.DatagramTransport | None = None
        self._cache: OrderedDict[bytes, tuple[float, bytes | None]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.errors = 0

    @classmethod
    async def listen(cls, service: MediaRelayClient, host: str, port: int) -> NgServer:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(service), local_addr=(host, port)
        )
        return protocol

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        sockname = self._transport.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.requests += 1
        cookie, space, body = data.partition(b" ")
        if not space or not cookie:
            self.errors += 1  # no cookie: nothing a client could match a reply to
            return
        now = time.monotonic()
        self._prune(now)
        cached = self._cache.get(cookie)
        if cached is not None:
            if cached[1] is not None:
                self._send(cached[1], addr)
            return  # still running: the reply will go out when it is ready
        self._cache[cookie] = (now, None)
        try:
            args = decode(body)
            if not isinstance(args, dict):
                raise BencodeError("the message is not a dictionary")
        except BencodeError as exc:
            self.errors += 1
            self._reply(cookie, {"result": "error", "error-reason": f"bencode: {exc}"}, addr)
            return
        task = asyncio.get_running_loop().create_task(self._run(cookie, args, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, cookie: bytes, args: dict[str, Any], addr: tuple[Any, ...]) -> None:
        try:
            reply = await ng_request(self._service, args, addr)
        except Exception as exc:  # a bug must still get an answer
            log.exception("ng command failed")
            reply = {"result": "error", "error-reason": f"internal error: {exc}"}
        if reply.get("result") == "error":
            self.errors += 1
        self._reply(cookie, reply, addr)

    def _reply(self, cookie: bytes, reply: dict[str, Any], addr: tuple[Any, ...]) -> None:
        data = cookie + b" " + encode(reply)
        self._cache[cookie] = (time.monotonic(), data)
        self._send(data, addr)

    def _send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _prune(self, now: float) -> None:
        while self._cache:
            _cookie, (at, _) = next(iter(self._cache.items()))
            if now - at < _CACHE_SECONDS and len(self._cache) < _CACHE_MAX:
                break
            self._cache.popitem(last=False)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        cookie, _, body = data.partition(b" ")
        future = self.waiting.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(body)


class NgClient:
    """A small ng client (tests, the benchmark, relay health checks)."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _ClientProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}_{id(self) & 0xFFFF:x}_"

    @classmethod
    async def connect(cls, host: str, port: int) -> NgClient:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _ClientProtocol, remote_addr=(host, port)
        )
        return cls(transport, protocol)

    def close(self) -> None:
        self._transport.close()

    async def raw(self, payload: bytes, cookie: bytes, *, timeout: float = 2.0) -> bytes:
        """Send ``cookie payload`` as is; the reply body (without the cookie)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._protocol.waiting[cookie] = future
        self._transport.sendto(cookie + b" " + payload)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise NgError(f"no ng reply within {timeout} s") from None
        finally:
            self._protocol.waiting.pop(cookie, None)

    async def command(
        self, command: str, *, timeout: float = 2.0, retries: int = 0, **args: Any
    ) -> dict[str, Any]:
        """Send a command (underscores in keyword names become dashes)."""
        message = {"command": command, **{k.replace("_", "-"): v for k, v in args.items()}}
        cookie = f"{self._prefix}{next(self._ids)}".encode()
        payload = encode(message)
        for attempt in range(retries + 1):
            try:
                body = await self.raw(payload, cookie, timeout=timeout)
                break
            except NgError:
                if attempt == retries:
                    raise
        reply = decode(body)
        if not isinstance(reply, dict):
            raise NgError("reply is not a dictionary")
        return reply

    async def ping(self, *, timeout: float = 1.0) -> bool:
        try:
            reply = await self.command("ping", timeout=timeout)
        except (NgError, BencodeError):
            return False
        return reply.get("result") == b"pong"
