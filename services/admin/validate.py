"""Checks of admin API arguments before they reach a table or a store.

Every bad value becomes an `InvalidArgument` naming the field (a 400 on the REST
API, INVALID_ARGUMENT on gRPC), so a bad request never reaches the database as a
driver error (DESIGN.md principle 9): strings longer than their Kamailio column,
NUL characters (PostgreSQL text cannot hold them), numbers outside the column's
integer type.
"""

from __future__ import annotations

import ipaddress
import re

from sipmesh.clients.errors import InvalidArgument

SMALLINT = (0, 32767)
INTEGER = (-(2**31), 2**31 - 1)
UINT_INTEGER = (0, 2**31 - 1)

_TOKEN = re.compile(r"^[^\s@:;<>\"]+$")


def text(value: str, name: str, max_len: int, *, required: bool = False) -> str:
    if "\x00" in value:
        raise InvalidArgument(f"{name}: must not contain NUL characters")
    if len(value) > max_len:
        raise InvalidArgument(f"{name}: longer than {max_len} characters")
    if required and not value.strip():
        raise InvalidArgument(f"{name}: required")
    return value


def token(value: str, name: str, max_len: int = 64) -> str:
    """A user or domain part: no blanks, '@', ':' or SIP delimiters."""
    text(value, name, max_len, required=True)
    if not _TOKEN.match(value):
        raise InvalidArgument(f"{name}: {value!r} is not a valid user or domain part")
    return value


def number(value: int, name: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgument(f"{name}: {value} is outside {low}..{high}")
    return value


def ip_address(value: str, name: str) -> str:
    text(value, name, 50, required=True)
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise InvalidArgument(f"{name}: {value!r} is not an IP address") from None


def sip_uri(value: str, name: str, max_len: int = 255) -> str:
    text(value, name, max_len, required=True)
    if not value.lower().startswith(("sip:", "sips:", "tel:")) or any(c.isspace() for c in value):
        raise InvalidArgument(f"{name}: {value!r} is not a sip:, sips: or tel: URI")
    return value


def regex(value: str, name: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise InvalidArgument(f"{name}: not a valid regular expression: {exc}") from None
    return value


def page(page_token: str, limit: int, max_limit: int = 1000) -> tuple[int, int]:
    """(offset, limit) from a list request's page token and limit (0 = the maximum)."""
    try:
        offset = int(page_token or "0")
    except ValueError:
        raise InvalidArgument(f"page_token: {page_token!r} is not a page token") from None
    if offset < 0 or offset > 2**31:
        raise InvalidArgument("page_token: out of range")
    return offset, min(limit or max_limit, max_limit)
