"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

Sans-IO: nothing here stores state or reads a clock. Server nonces are stateless
(:class:`NonceFactory` signs a timestamp with a shared secret, so any instance of a
horizontally scaled registrar can verify a nonce another instance issued), and
nonce-count replay protection is expressed as data the caller records atomically in
its shared store (:class:`NonceUse`, :class:`NonceCountTracker`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from sipmesh.sip.digest_nonce import (
    MemoryNonceCountTracker,
    NonceCountTracker,
    NonceFactory,
    NonceStatus,
    NonceUse,
    accept_nonce_count,
)
from sipmesh.sip.errors import ParseError
from sipmesh.sip.fields import (
    CHALLENGE_UNQUOTED,
    CREDENTIAL_UNQUOTED,
    format_auth_params,
    parse_auth_params,
)

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "AuthStatus",
    "DigestChallenge",
    "DigestCredentials",
    "DigestError",
    "MemoryNonceCountTracker",
    "NonceCountTracker",
    "NonceFactory",
    "NonceStatus",
    "NonceUse",
    "accept_nonce_count",
    "build_credentials",
    "check_authorization",
    "compute_ha1",
    "compute_response",
    "ha1_for_kamailio",
    "ha1b_for_kamailio",
    "hash_hex",
    "session_ha1",
    "verify_credentials",
]


class DigestError(ValueError):
    """A challenge or credential that cannot be used (unknown algorithm, missing field)."""


# RFC 7616 §6.1 / RFC 8760 §2: algorithm token -> hashlib name. The "-sess" variants
# share the hash; only the HA1 computation differs (RFC 7616 §3.4.2).
_HASHES: dict[str, str] = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}
ALGORITHMS: tuple[str, ...] = (
    "MD5",
    "MD5-sess",
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
)


def _split_algorithm(algorithm: str | None) -> tuple[str, bool]:
    """Return (hashlib name, is_session) for an algorithm token; absent means MD5."""
    token = (algorithm or "MD5").strip()
    upper = token.upper()
    sess = upper.endswith("-SESS")
    base = upper[: -len("-SESS")] if sess else upper
    for name, hashlib_name in _HASHES.items():
        if name.upper() == base:
            return hashlib_name, sess
    raise DigestError(f"unsupported digest algorithm {token!r}")


def hash_hex(algorithm: str | None, data: str | bytes) -> str:
    """H(data) as lowercase hex for the hash of ``algorithm`` (RFC 7616 §3.4)."""
    hashlib_name, _ = _split_algorithm(algorithm)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(hashlib_name, raw).hexdigest()


def compute_ha1(algorithm: str | None, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) (RFC 7616 §3.4.2), without the -sess step."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm: str | None, ha1: str, nonce: str, cnonce: str) -> str:
    """HA1 for a ``-sess`` algorithm: H(H(user:realm:pw):nonce:cnonce) (RFC 2617 §3.2.2.2)."""
    return hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")


def ha1_for_kamailio(username: str, realm: str, password: str) -> str:
    """Kamailio's ``subscriber.ha1`` column: MD5(username:realm:password)."""
    return compute_ha1("MD5", username, realm, password)


def ha1b_for_kamailio(username: str, domain: str, realm: str, password: str) -> str:
    """Kamailio's ``subscriber.ha1b`` column: MD5(username@domain:realm:password).

    Used when a UA sends the full ``user@domain`` as the digest username.
    """
    return compute_ha1("MD5", f"{username}@{domain}", realm, password)


def compute_response(
    *,
    algorithm: str | None,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The digest ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).

    ``ha1`` is the plain H(user:realm:pw); the -sess step is applied here when the
    algorithm asks for it, because it needs the nonce and cnonce of this exchange.
    """
    _, sess = _split_algorithm(algorithm)
    if sess:
        if not cnonce:
            raise DigestError("a -sess algorithm needs a cnonce")
        ha1 = session_ha1(algorithm, ha1, nonce, cnonce)
    qop_token = qop.lower() if qop else None
    if qop_token == "auth-int":
        # RFC 2617 §3.2.2.3: A2 = Method:digest-uri:H(entity-body)
        ha2 = hash_hex(algorithm, f"{method}:{uri}:{hash_hex(algorithm, body)}")
    elif qop_token in (None, "auth"):
        ha2 = hash_hex(algorithm, f"{method}:{uri}")
    else:
        raise DigestError(f"unsupported qop {qop!r}")
    if qop_token is None:
        # RFC 2069 compatibility mode (RFC 2617 §3.2.2.1, no qop).
        return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    if not nc or not cnonce:
        raise DigestError("qop requires nc and cnonce")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop_token}:{ha2}")


def _unquote_flag(value: str | None) -> bool:
    return value is not None and value.strip().strip('"').lower() == "true"


def _digest_params(header_value: str) -> dict[str, str]:
    """Auth-params of a ``Digest …`` header value (names lower-case, values unquoted)."""
    try:
        scheme, params = parse_auth_params(header_value)
    except ParseError as exc:
        raise DigestError(f"malformed authentication header: {exc.reason}") from None
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest header: scheme {scheme!r}")
    return params


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A WWW-Authenticate / Proxy-Authenticate Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DigestChallenge:
        """Build from auth-params with lower-case names and unquoted values."""
        try:
            realm = params["realm"]
            nonce = params["nonce"]
        except KeyError as exc:
            raise DigestError(f"challenge lacks {exc.args[0]}") from None
        qop_text = params.get("qop", "")
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip())
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=params.get("algorithm"),
            qop=qop,
            opaque=params.get("opaque"),
            stale=_unquote_flag(params.get("stale")),
            domain=params.get("domain"),
            userhash=_unquote_flag(params.get("userhash")),
        )

    def to_params(self) -> dict[str, str]:
        """Auth-params in the customary order; values unquoted (formatting quotes them)."""
        out: dict[str, str] = {"realm": self.realm}
        if self.domain is not None:
            out["domain"] = self.domain
        out["nonce"] = self.nonce
        if self.opaque is not None:
            out["opaque"] = self.opaque
        if self.stale:
            out["stale"] = "true"
        if self.algorithm is not None:
            out["algorithm"] = self.algorithm
        if self.qop:
            out["qop"] = ",".join(self.qop)
        if self.userhash:
            out["userhash"] = "true"
        return out

    @classmethod
    def parse(cls, header_value: str) -> DigestChallenge:
        """From a WWW-/Proxy-Authenticate value such as ``Digest realm="x", nonce="y"``."""
        return cls.from_params(_digest_params(header_value))

    def to_header(self) -> str:
        """The header value; qop is quoted in challenges (RFC 7616 §3.3)."""
        return format_auth_params("Digest", self.to_params(), unquoted=CHALLENGE_UNQUOTED)


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An Authorization / Proxy-Authorization Digest credential (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DigestCredentials:
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise DigestError(f"credentials lack {', '.join(missing)}")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=params.get("algorithm"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=params["qop"].lower() if "qop" in params else None,
            nc=params.get("nc"),
            userhash=_unquote_flag(params.get("userhash")),
        )

    def to_params(self) -> dict[str, str]:
        out: dict[str, str] = {
            "username": self.username,
            "realm": self.realm,
            "nonce": self.nonce,
            "uri": self.uri,
            "response": self.response,
        }
        if self.algorithm is not None:
            out["algorithm"] = self.algorithm
        if self.cnonce is not None:
            out["cnonce"] = self.cnonce
        if self.opaque is not None:
            out["opaque"] = self.opaque
        if self.qop is not None:
            out["qop"] = self.qop
        if self.nc is not None:
            out["nc"] = self.nc
        if self.userhash:
            out["userhash"] = "true"
        return out

    @classmethod
    def parse(cls, header_value: str) -> DigestCredentials:
        """From an Authorization / Proxy-Authorization value."""
        return cls.from_params(_digest_params(header_value))

    def to_header(self) -> str:
        """The header value; qop, nc and algorithm unquoted (RFC 7616 §3.4)."""
        return format_auth_params("Digest", self.to_params(), unquoted=CREDENTIAL_UNQUOTED)

    @property
    def nonce_count(self) -> int | None:
        """The nc value as an integer (8 hex digits, RFC 2617 §3.2.2), None if absent/bad."""
        if self.nc is None or len(self.nc) != 8:
            return None
        try:
            return int(self.nc, 16)
        except ValueError:
            return None


def build_credentials(
    challenge: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
    qop: str | None = None,
) -> DigestCredentials:
    """Client side: answer ``challenge`` (RFC 7616 §3.4).

    Picks qop ``auth`` when offered (else ``auth-int``, else none) unless ``qop`` is
    given. ``cnonce`` defaults to random hex; pass one in for reproducible output.
    """
    if qop is None and challenge.qop:
        qop = "auth" if "auth" in challenge.qop else challenge.qop[0]
    if qop is not None and challenge.qop and qop not in challenge.qop:
        raise DigestError(f"qop {qop!r} not offered by the challenge")
    _, sess = _split_algorithm(challenge.algorithm)
    if cnonce is None and (qop is not None or sess):
        cnonce = os.urandom(12).hex()
    nc_text = f"{nc:08x}" if qop is not None else None
    user_field = username
    if challenge.userhash:
        # RFC 7616 §3.4.4: username = H(unq(username) ":" unq(realm))
        user_field = hash_hex(challenge.algorithm, f"{username}:{challenge.realm}")
    ha1 = compute_ha1(challenge.algorithm, username, challenge.realm, password)
    response = compute_response(
        algorithm=challenge.algorithm,
        ha1=ha1,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    return DigestCredentials(
        username=user_field,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce if (qop is not None or sess) else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        userhash=challenge.userhash,
    )


def verify_credentials(
    credentials: DigestCredentials,
    method: str,
    *,
    password: str | None = None,
    ha1: str | None = None,
    username: str | None = None,
    body: bytes = b"",
) -> bool:
    """Check the ``response`` against a plaintext password or a stored HA1.

    ``username`` is the account name when ``credentials.username`` is a userhash
    (RFC 7616 §3.4.4); otherwise the credential's username is used. The stored HA1
    must be the plain H(user:realm:pw); the -sess step is applied here.
    """
    if (password is None) == (ha1 is None):
        raise DigestError("pass exactly one of password or ha1")
    try:
        if ha1 is None:
            assert password is not None
            account = username if username is not None else credentials.username
            ha1 = compute_ha1(credentials.algorithm, account, credentials.realm, password)
        expected = compute_response(
            algorithm=credentials.algorithm,
            ha1=ha1,
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
    except DigestError:
        return False
    return hmac.compare_digest(expected, credentials.response.lower())


class AuthStatus(enum.Enum):
    OK = "ok"
    STALE_NONCE = "stale"  # answer with a new challenge carrying stale=true
    INVALID_NONCE = "invalid-nonce"
    BAD_RESPONSE = "bad-response"
    BAD_NONCE_COUNT = "bad-nc"
    REALM_MISMATCH = "realm-mismatch"


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    nonce_use: NonceUse | None = None  # set when OK and qop was used: record it

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


def check_authorization(
    credentials: DigestCredentials,
    method: str,
    now: float,
    nonces: NonceFactory,
    *,
    realm: str,
    password: str | None = None,
    ha1: str | None = None,
    username: str | None = None,
    body: bytes = b"",
) -> AuthResult:
    """Server side: nonce validity, then the response (RFC 3261 §22.4, RFC 7616 §3.4).

    An OK result with ``nonce_use`` set must be confirmed by recording that use in a
    :class:`NonceCountTracker`; a rejected record means a replay (answer 401 again).
    The response is checked before staleness so that ``stale=true`` is only sent to a
    client that knows the password (RFC 7616 §3.3, stale).
    """
    if credentials.realm != realm:
        return AuthResult(AuthStatus.REALM_MISMATCH)
    status = nonces.check(credentials.nonce, now)
    if status is NonceStatus.INVALID:
        return AuthResult(AuthStatus.INVALID_NONCE)
    if not verify_credentials(
        credentials, method, password=password, ha1=ha1, username=username, body=body
    ):
        return AuthResult(AuthStatus.BAD_RESPONSE)
    if status is NonceStatus.STALE:
        return AuthResult(AuthStatus.STALE_NONCE)
    if credentials.qop is None:
        return AuthResult(AuthStatus.OK)
    count = credentials.nonce_count
    if count is None or count < 1:
        return AuthResult(AuthStatus.BAD_NONCE_COUNT)
    expires = nonces.expires_at(credentials.nonce)
    assert expires is not None  # check() returned VALID
    return AuthResult(AuthStatus.OK, NonceUse(credentials.nonce, count, expires))
