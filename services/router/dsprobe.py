"""Dispatcher probing: OPTIONS to every destination, states from the answers.

Kamailio's ds_ping_interval / ds_probing_threshold / ds_inactive_threshold /
ds_ping_reply_codes / ds_probing_mode. One router instance probes at a time: the
one holding the lease ``ds:prober`` in the shared KV store (taken with SET NX and a
TTL, renewed every round), so N routers do not send N probes. The states it decides
go through ``Dispatcher.set_state`` (KV store + bus notice), so every instance
follows.

A probe is an OPTIONS request (RFC 3261 §11) sent by a ``ProbeSender``: through the
SIP edge (``EdgeProbeSender``, the probe leaves from the edge's sockets as
Kamailio's does) or over a UDP socket of the router itself (``UdpProbeSender``).
A final response whose code is in ``reply codes`` counts as alive; anything else,
a timeout or a transport error counts as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast

from sipmesh.clients.interfaces import EdgeClient
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2
from sipmesh.router.dispatcher import FLAG_PROBING, Destination, Dispatcher, host_port
from sipmesh.sip import ParseError, Request, Response, parse_message
from sipmesh.state.kv import KVStore

log = logging.getLogger("sipmesh.router.dispatcher")

LEASE_KEY = "ds:prober"


def parse_reply_codes(text: str) -> frozenset[int]:
    """Kamailio's ``class=2;code=403;code=488`` (also ``2xx,403``) → set of codes."""
    codes: set[int] = set()
    for raw in text.replace(",", ";").split(";"):
        item = raw.strip().lower()
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            if sep and name.strip() == "class":
                base = int(value) * 100
                codes.update(range(base, base + 100))
            elif sep and name.strip() == "code":
                codes.add(int(value))
            elif item.endswith("xx"):
                base = int(item[0]) * 100
                codes.update(range(base, base + 100))
            else:
                codes.add(int(item))
        except ValueError:
            raise ValueError(f"bad reply code item {raw!r}") from None
    return frozenset(codes)


@dataclass(frozen=True)
class ProbeSettings:
    interval: float = 10.0
    timeout: float = 2.0
    probing_threshold: int = 1  # failures before an active destination goes inactive
    inactive_threshold: int = 1  # successes before an inactive one is active again
    reply_codes: frozenset[int] = frozenset(range(200, 300))
    mode: int = 1  # 0: flagged/inactive only, 1: all, 2: inactive only
    from_uri: str = "sip:dispatcher@localhost"
    lease_ttl: float = 0.0  # 0: three intervals


def options_request(dest: Destination, from_uri: str) -> Request:
    """The probe: OPTIONS to the destination URI, without Via (the sender adds its own)."""
    return Request(
        "OPTIONS",
        dest.uri,
        [
            ("Max-Forwards", "70"),
            ("From", f"<{from_uri}>;tag={secrets.token_hex(5)}"),
            ("To", f"<{dest.uri}>"),
            ("Call-ID", f"ds-{secrets.token_hex(10)}"),
            ("CSeq", "1 OPTIONS"),
            ("Content-Length", "0"),
        ],
        b"",
    )


class ProbeSender(Protocol):
    async def __call__(self, dest: Destination, request: Request, timeout: float) -> int:
        """Send ``request`` to ``dest``; the final status, 0 for no answer / error."""
        ...


class EdgeProbeSender:
    """Probes leave through the SIP edge (Edge.Send, edge.proto)."""

    def __init__(self, edge: Callable[[], Awaitable[EdgeClient]]) -> None:
        self._edge = edge
        self._client: EdgeClient | None = None

    async def __call__(self, dest: Destination, request: Request, timeout: float) -> int:
        if self._client is None:
            self._client = await self._edge()
        # The edge's Edge.Send parses the request strictly, and RFC 3261 §8.1.1 makes
        # Via mandatory: a placeholder (RFC 2606 .invalid host) sits below the Via the
        # edge adds on top; responses follow the top one and end at the edge.
        request.add(
            "Via", f"SIP/2.0/UDP router.invalid;branch=z9hG4bK{secrets.token_hex(8)}", first=True
        )
        out = common_pb2.OutboundRequest(
            kind=common_pb2.OutboundRequest.KIND_KEEPALIVE_OPTIONS,
            raw=bytes(request),
            socket=dest.socket,
            timeout_ms=int(timeout * 1000),
        )
        result = await self._client.send(out, timeout=timeout)
        if result.outcome == edge_pb2.SendResult.OUTCOME_RESPONSE:
            return int(result.status)
        return 0


class UdpProbeSender(asyncio.DatagramProtocol):
    """Probes over a UDP socket of the router (retransmitted per RFC 3261 §17.1.2.2)."""

    def __init__(self, bind: tuple[str, int] = ("127.0.0.1", 0), t1: float = 0.5) -> None:
        self._bind = bind
        self._t1 = t1
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:  # concurrent probes share one socket
            if self._transport is None:
                loop = asyncio.get_running_loop()
                await loop.create_datagram_endpoint(lambda: self, local_addr=self._bind)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            msg = parse_message(data)
        except ParseError:
            return
        if not isinstance(msg, Response) or msg.status < 200:
            return
        branch = _branch(msg.get("via") or "")
        future = self._waiting.get(branch)
        if future is not None and not future.done():
            future.set_result(msg.status)

    async def __call__(self, dest: Destination, request: Request, timeout: float) -> int:
        if self._transport is None:
            await self.open()
        assert self._transport is not None
        host, port = host_port(dest.uri)
        local = self._transport.get_extra_info("sockname")
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        request.add("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport", first=True)
        data = bytes(request)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = future
        try:
            async with asyncio.timeout(timeout):
                interval = self._t1
                while True:
                    self._transport.sendto(data, (host, port))
                    done, _ = await asyncio.wait({future}, timeout=interval)
                    if done:
                        return future.result()
                    interval = min(interval * 2, 4.0)
        except TimeoutError:
            return 0
        finally:
            self._waiting.pop(branch, None)


def _branch(via: str) -> str:
    for param in via.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "branch":
            return value.strip()
    return ""


class Prober:
    """Probes the destinations while this instance holds the prober lease."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        sender: ProbeSender,
        settings: ProbeSettings,
        *,
        kv: KVStore | None = None,
        instance_id: str = "router",
    ) -> None:
        self._ds = dispatcher
        self._send = sender
        self._cfg = settings
        self._kv = kv
        self._instance = instance_id
        self._fails: dict[tuple[int, str], int] = {}
        self._oks: dict[tuple[int, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self.leader = False
        self.rounds = 0

    @property
    def _lease_ttl(self) -> float:
        return self._cfg.lease_ttl or max(3 * self._cfg.interval, 1.0)

    async def start(self) -> None:
        if self._cfg.interval > 0:
            self._task = asyncio.create_task(self._loop(), name="dispatcher-prober")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.leader and self._kv is not None:
            with contextlib.suppress(Exception):
                if await self._kv.get(LEASE_KEY) == self._instance.encode():
                    await self._kv.delete(LEASE_KEY)
        self.leader = False

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the store or the edge is down: next round
                log.debug("dispatcher: probe round failed: %s", exc)
            await asyncio.sleep(self._cfg.interval)

    async def acquire(self) -> bool:
        """Take or renew the lease; True when this instance is the prober."""
        if self._kv is None:
            self.leader = True
            return True
        me = self._instance.encode()
        ttl = self._lease_ttl
        if await self._kv.set_if_absent(LEASE_KEY, me, ttl):
            self.leader = True
        elif await self._kv.get(LEASE_KEY) == me:
            await self._kv.set(LEASE_KEY, me, ttl)
            self.leader = True
        else:
            self.leader = False
        return self.leader

    def _wanted(self, dest: Destination) -> bool:
        state = self._ds.state(dest)
        if state.startswith("D"):
            return False
        if self._cfg.mode == 1:
            return True
        inactive = state.startswith("I")
        if self._cfg.mode == 2:
            return inactive
        return inactive or bool(dest.flags & FLAG_PROBING)

    async def run_once(self) -> bool:
        """One round: probe every wanted destination if we hold the lease."""
        if not await self.acquire():
            return False
        dests = [d for d in self._ds.tables.destinations() if self._wanted(d)]
        if dests:
            results = await asyncio.gather(*(self._probe(d) for d in dests))
            for dest, alive in zip(dests, results, strict=True):
                await self._account(dest, alive)
        self.rounds += 1
        return True

    async def _probe(self, dest: Destination) -> bool:
        request = options_request(dest, self._cfg.from_uri)
        try:
            status = await self._send(dest, request, self._cfg.timeout)
        except Exception as exc:
            log.debug("dispatcher: probe of %s failed: %s", dest.uri, exc)
            status = 0
        return status in self._cfg.reply_codes

    async def _account(self, dest: Destination, alive: bool) -> None:
        key = dest.key
        state = self._ds.state(dest)
        if alive:
            self._fails.pop(key, None)
            if state.startswith("I"):
                oks = self._oks.get(key, 0) + 1
                self._oks[key] = oks
                if oks >= self._cfg.inactive_threshold:
                    self._oks.pop(key, None)
                    log.info("dispatcher: %s (set %d) answers again: active", dest.uri, dest.setid)
                    await self._ds.set_state(dest.setid, dest.uri, "active")
            return
        self._oks.pop(key, None)
        if state.startswith(("A", "T")):
            fails = self._fails.get(key, 0) + 1
            self._fails[key] = fails
            if fails >= self._cfg.probing_threshold:
                self._fails.pop(key, None)
                log.warning("dispatcher: %s (set %d) not answering: inactive", dest.uri, dest.setid)
                await self._ds.set_state(dest.setid, dest.uri, "inactive")
