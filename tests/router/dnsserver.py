"""A small authoritative DNS server over UDP on 127.0.0.1, for resolver tests.

Answers from an in-memory zone built with ``add``; names nobody added get NXDOMAIN,
names that exist with other types get NODATA (both with the zone's SOA in the
authority section, so resolvers may cache them, RFC 2308). Names (and their
subdomains) under ``servfail`` get SERVFAIL; under ``silent`` no answer at all.
``queries`` counts every query by (name, type), so tests see what reached the
server and what a cache answered.

Also usable by end-to-end tests: ``async with DnsTestServer() as server:`` then give
``f"{server.host}:{server.port}"`` to ``router.dns_servers``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

SOA = "ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def _under(name: str, zones: set[str]) -> bool:
    return any(name == z or name.endswith("." + z) for z in zones)


class DnsTestServer(asyncio.DatagramProtocol):
    def __init__(self, host: str = "127.0.0.1", negative_ttl: int = 60) -> None:
        self.host = host
        self.port = 0
        self.negative_ttl = negative_ttl
        self.zone: dict[tuple[str, dns.rdatatype.RdataType], tuple[int, list[str]]] = {}
        self.servfail: set[str] = set()
        self.silent: set[str] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._transport: asyncio.DatagramTransport | None = None

    def add(self, name: str, rdtype: str, *rdatas: str, ttl: int = 300) -> None:
        """Records of one set, e.g. add("_sip._udp.a.test", "SRV", "10 0 5060 x.a.test.")."""
        self.zone[(_norm(name), dns.rdatatype.from_text(rdtype))] = (ttl, list(rdatas))

    def count(self, name: str, rdtype: str) -> int:
        return self.queries[(_norm(name), rdtype.upper())]

    @property
    def total(self) -> int:
        return sum(self.queries.values())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> DnsTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- asyncio.DatagramProtocol ----------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not DNS: ignore, as a server would
        if not query.question or self._transport is None:
            return
        question = query.question[0]
        name = _norm(question.name.to_text())
        rdtype = question.rdtype
        self.queries[(name, dns.rdatatype.to_text(rdtype))] += 1
        if _under(name, self.silent):
            return
        response = self._answer(query, name, rdtype)
        self._transport.sendto(response.to_wire(), addr)

    def _answer(
        self, query: dns.message.Message, name: str, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if _under(name, self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        entry = self.zone.get((name, rdtype))
        if entry is not None:
            ttl, rdatas = entry
            response.answer.append(
                dns.rrset.from_text_list(name + ".", ttl, dns.rdataclass.IN, rdtype, rdatas)
            )
            return response
        # A name with records of other types, or with names below it (an empty
        # non-terminal), exists: NODATA; anything else does not (RFC 8020).
        if not any(n == name or n.endswith("." + name) for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = SOA.format(minimum=self.negative_ttl)
        response.authority.append(dns.rrset.from_text("test.", self.negative_ttl, "IN", "SOA", soa))
        return response
