"""Service targets and their resolution into backend addresses.

A single HTTP/2 stream sticks to one server, so gRPC's round-robin channel policy
does not share the load of a long-lived stream: the batching client resolves the
target itself and keeps one stream per backend address (DESIGN.md, Performance).

Accepted targets (what `--grpc`-style settings of other services hold):
  host:port              a name or IP literal; `[v6]:port` for IPv6
  dns:///host:port       the same, gRPC's spelling
  h1:p1,h2:p2,...        a fixed list (each entry resolved)
  ipv4:a:p,b:p / ipv6:[a]:p,[b]:p   gRPC's static lists
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

Resolver = Callable[[], Awaitable[list[str]]]
"""Returns the current backend addresses (`ip:port`, `[v6]:port`), best first."""


def split_host_port(entry: str) -> tuple[str, int]:
    """`host:port` / `[v6]:port` -> (host, port); raises ValueError naming the entry."""
    entry = entry.strip()
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad target {entry!r}: expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = entry.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad target {entry!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"bad target {entry!r}: put IPv6 addresses in brackets")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad target {entry!r}: port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad target {entry!r}: port out of range")
    return host, port


def parse_target(target: str) -> list[tuple[str, int]]:
    """The (host, port) entries of a target, in order, without duplicates."""
    text = target.strip()
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    if not text:
        raise ValueError("empty target")
    entries: list[tuple[str, int]] = []
    for part in text.split(","):
        entry = split_host_port(part)
        if entry not in entries:
            entries.append(entry)
    return entries


def format_address(host: str, port: int) -> str:
    """`ip:port`, with brackets for IPv6 (the form gRPC channels take)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def _resolve_name(host: str, resolver: dns.asyncresolver.Resolver | None) -> list[str]:
    # getaddrinfo for localhost and as a fallback: it reads /etc/hosts, which
    # dnspython does not; dnspython first for every other name because it returns
    # every A/AAAA record (a Kubernetes headless service lists each pod).
    if host != "localhost" and resolver is not None:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(host, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
                continue
            except dns.exception.Timeout:
                continue
            found.extend(str(record) for record in answer)
        if found:
            return found
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def resolve_target(
    target: str, *, resolver: dns.asyncresolver.Resolver | None = None
) -> list[str]:
    """Resolve every entry of `target` to backend addresses (`ip:port`, `[v6]:port`).

    Raises OSError (or dnspython's errors) when no entry resolves at all.
    """
    addresses: list[str] = []
    errors: list[str] = []
    for host, port in parse_target(target):
        literal = _ip_literal(host)
        try:
            ips = [literal] if literal is not None else await _resolve_name(host, resolver)
        except (OSError, dns.exception.DNSException) as exc:
            errors.append(f"{host}: {exc}")
            continue
        for ip in ips:
            address = format_address(ip, port)
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise OSError(f"cannot resolve {target!r}: {'; '.join(errors) or 'no addresses'}")
    return addresses


def target_resolver(target: str, *, use_dns: bool = True) -> Resolver:
    """A Resolver for `target` (validated now, so a bad setting fails at start)."""
    parse_target(target)
    dns_resolver = dns.asyncresolver.Resolver() if use_dns else None

    async def resolve() -> list[str]:
        return await resolve_target(target, resolver=dns_resolver)

    return resolve


def channel_target(target: str) -> str:
    """The gRPC channel target for unary calls with round-robin over every address.

    One name -> `dns:///name:port` (gRPC re-resolves it); IP literals -> gRPC's
    static `ipv4:`/`ipv6:` lists. A list of several names cannot be expressed as one
    gRPC target and raises ValueError.
    """
    entries = parse_target(target)
    literals = [(_ip_literal(host), port) for host, port in entries]
    if all(ip is not None for ip, _ in literals):
        ips = [(ip, port) for ip, port in literals if ip is not None]
        if all(":" not in ip for ip, _ in ips):
            return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in ips)
        if all(":" in ip for ip, _ in ips):
            return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in ips)
        raise ValueError(f"target {target!r} mixes IPv4 and IPv6 literals")
    if len(entries) == 1:
        host, port = entries[0]
        return f"dns:///{host}:{port}"
    raise ValueError(f"target {target!r}: a list of names needs one DNS name instead")
