"""The responses the registrar sends (RFC 3261 §10.3 step 8, §22; RFC 3327, 5626)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from email.utils import formatdate

from sipmesh.sip.digest import DigestChallenge
from sipmesh.sip.fields import CHALLENGE_UNQUOTED, format_auth_params
from sipmesh.sip.headers import format_params
from sipmesh.sip.message import Request, Response
from sipmesh.sip.stateless import make_response
from sipmesh.state.location import Binding

SERVER = "sipmesh registrar"


def remaining(binding: Binding, now: float) -> int:
    """Seconds left, rounded, never negative (the ``expires`` of the 200's Contact)."""
    return max(0, int(binding.expires_at - now + 0.5))


def contact_value(binding: Binding, now: float) -> str:
    """``<uri>;expires=N;q=..`` plus the parameters the UA registered (RFC 5626 §6)."""
    params: dict[str, str | None] = {"expires": str(remaining(binding, now))}
    if binding.q is not None:
        params["q"] = f"{binding.q:.3f}".rstrip("0").rstrip(".")
    stored = binding.attrs.get("params")
    if isinstance(stored, dict):
        for name, value in stored.items():
            params.setdefault(str(name), None if value is None else str(value))
    return f"<{binding.contact}>{format_params(params)}"


def date_header(now: float) -> tuple[str, str]:
    # RFC 3261 §20.17: rfc1123-date, always GMT (one-second resolution).
    return ("Date", _http_date(int(now)))


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    # formatdate costs ~25 µs; every 200 OK to a REGISTER carries a Date: format
    # each second once.
    return formatdate(second, usegmt=True)


def ok_response(
    request: Request,
    bindings: Sequence[Binding],
    now: float,
    *,
    path: Sequence[str] = (),
    outbound: bool = False,
) -> Response:
    """The 200 listing every current binding with its remaining expires (§10.3 step 8)."""
    headers: list[tuple[str, str]] = [("Contact", contact_value(b, now)) for b in bindings]
    # RFC 3327 §5.3: echo the Path the registrar stored, when the UA supports it.
    headers.extend(("Path", p) for p in path)
    if outbound:
        # RFC 5626 §6: the registrar tells the UA it applied outbound processing.
        headers.append(("Require", "outbound"))
    headers.append(("Supported", "path, outbound"))
    headers.append(date_header(now))
    headers.append(("Server", SERVER))
    return make_response(request, 200, "OK", headers=headers)


def error_response(
    request: Request, status: int, reason: str, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    extra = [*headers, ("Server", SERVER)]
    return make_response(request, status, reason, headers=extra)


def challenge_response(
    request: Request, challenges: Sequence[DigestChallenge], *, proxy: bool
) -> Response:
    """401 with WWW-Authenticate (§22.2) or 407 with Proxy-Authenticate (§22.3).

    One header per offered algorithm, the preferred first (RFC 8760 §2.4, RFC 7616
    §3.7: the client uses the first one it supports).
    """
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    headers = [
        (name, format_auth_params("Digest", c.to_params(), unquoted=CHALLENGE_UNQUOTED))
        for c in challenges
    ]
    status, reason = (407, "Proxy Authentication Required") if proxy else (401, "Unauthorized")
    return error_response(request, status, reason, headers)
