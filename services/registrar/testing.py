"""Helpers for tests that talk to the registrar (this suite's, the router's, e2e).

:class:`TestUA` builds REGISTERs the way a user agent does — one Call-ID, growing
CSeq — and answers digest challenges with :func:`sipmesh.sip.digest.build_credentials`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipmesh.sip.digest import DigestChallenge, build_credentials
from sipmesh.sip.fields import format_auth_params, parse_auth_params
from sipmesh.sip.message import Request, Response


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
