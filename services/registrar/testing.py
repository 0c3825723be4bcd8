"""Helpers for tests that talk to the registrar (this suite's, the router's, e2e).

:class:`TestUA` builds REGISTERs the way a user agent does — one Call-ID, growing
CSeq — and answers digest challenges with :func:`sipmesh.sip.digest.build_credentials`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipmesh.registrar.api import Registrar
from sipmesh.registrar.subscribers import credential_columns
from sipmesh.sip.digest import DigestChallenge, build_credentials
from sipmesh.sip.fields import format_auth_params, parse_auth_params
from sipmesh.sip.message import Request, Response
from sipmesh.state.bus import Message
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.kv_redis import RedisKV
from sipmesh.state.location import LocationStore
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.location_redis import RedisLocationStore
from sipmesh.state.redis_common import make_redis_client

DOMAIN = "example.com"
MakeService = Callable[..., Awaitable[Registrar]]


def make_register(
    aor: str,
    contacts: Sequence[str] = (),
    *,
    call_id: str = "reg-call-1",
    cseq: int = 1,
    expires: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
    registrar: str | None = None,
) -> Request:
    """A REGISTER for ``aor`` ("alice@example.com") with the given Contact values."""
    domain = aor.rpartition("@")[2]
    headers: list[tuple[str, str]] = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{secrets.token_hex(6)}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{aor}>;tag={secrets.token_hex(4)}"),
        ("To", f"<sip:{aor}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
    ]
    headers.extend(("Contact", c) for c in contacts)
    if expires is not None:
        headers.append(("Expires", str(expires)))
    headers.extend(extra)
    headers.append(("Content-Length", "0"))
    return Request("REGISTER", f"sip:{registrar or domain}", headers)


def challenges_of(response: Response) -> list[DigestChallenge]:
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    out = []
    for value in response.get_instances(name):
        _, params = parse_auth_params(value)
        out.append(DigestChallenge.from_params(params))
    return out


def contact_expires(response: Response) -> dict[str, int]:
    """Contact URI -> expires of a 200 to a REGISTER."""
    from sipmesh.sip.fields import Contact

    out: dict[str, int] = {}
    for value in response.get_all("contact"):
        c = Contact.parse(value)
        out[str(c.uri)] = int(c.params.get("expires") or -1)
    return out


@dataclass
class TestUA:
    """A registering user agent: same Call-ID for every REGISTER, CSeq + 1 each time."""

    __test__ = False  # not a pytest class

    aor: str
    password: str
    username: str = ""
    call_id: str = field(default_factory=lambda: f"ua-{secrets.token_hex(8)}")
    cseq: int = 0
    nc: int = 0

    def register(
        self,
        contacts: Sequence[str] = (),
        *,
        expires: int | None = None,
        extra: Sequence[tuple[str, str]] = (),
        challenge: DigestChallenge | None = None,
        password: str | None = None,
        method_header: str = "Authorization",
    ) -> Request:
        self.cseq += 1
        headers = list(extra)
        if challenge is not None:
            self.nc += 1
            user = self.username or self.aor.partition("@")[0]
            creds = build_credentials(
                challenge,
                username=user,
                password=self.password if password is None else password,
                method="REGISTER",
                uri=f"sip:{self.aor.rpartition('@')[2]}",
                nc=self.nc,
            )
            headers.append((method_header, format_auth_params("Digest", creds.to_params())))
        return make_register(
            self.aor,
            contacts,
            call_id=self.call_id,
            cseq=self.cseq,
            expires=expires,
            extra=headers,
        )


async def add_subscriber(db: Database, user: str, domain: str, password: str) -> None:
    cols = credential_columns(user, domain, password, store_password=False, sha256=False)
    await db.execute(
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
        "VALUES ($1, $2, $3, $4, $5)",
        user,
        domain,
        cols["password"],
        cols["ha1"],
        cols["ha1b"],
    )


class Stores:
    """Opens location/kv stores of one backend; a second call = another instance."""

    def __init__(self, kind: str, prefix: str, clock: FakeClock, redis_url: str | None) -> None:
        self.kind = kind
        self.prefix = prefix
        self.clock = clock
        self.redis_url = redis_url
        self._mem_loc: MemoryLocationStore | None = None
        self._mem_kv: MemoryKV | None = None
        self.opened: list[Any] = []

    def location(self) -> LocationStore:
        if self.kind == "memory":
            if self._mem_loc is None:
                self._mem_loc = MemoryLocationStore(prefix=self.prefix, clock=self.clock)
            return self._mem_loc
        assert self.redis_url is not None
        store = RedisLocationStore(
            make_redis_client(self.redis_url), prefix=self.prefix, clock=self.clock
        )
        self.opened.append(store)
        return store

    def kv(self) -> KVStore:
        if self.kind == "memory":
            if self._mem_kv is None:
                self._mem_kv = MemoryKV(prefix=self.prefix, clock=self.clock)
            return self._mem_kv
        assert self.redis_url is not None
        kv = RedisKV(make_redis_client(self.redis_url), prefix=self.prefix)
        self.opened.append(kv)
        return kv

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


class Recorder:
    """Collects every registration event published on a bus."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def kinds(self) -> list[str]:
        return [m.subject.rsplit(".", 1)[1] for m in self.messages]
