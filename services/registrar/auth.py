"""Digest authentication (Kamailio's auth + auth_db: www_authorize, proxy_authorize).

RFC 3261 §22 with RFC 7616/8760 digests: challenges offer each configured algorithm
(SHA-256 first by default) with qop=auth and one stateless signed nonce
(sipmesh.sip.digest.NonceFactory: every instance sharing the secret verifies it).
Replay protection: an accepted (nonce, nc) pair is recorded with ``set_if_absent``
in the shared key/value store, so the same Authorization is refused on every
instance. Failures are counted per source and per user in the store; past the
configured thresholds the source is banned (the edge's ban list) or the user locked.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipmesh.bans import BanList
from sipmesh.registrar.aor import Aor
from sipmesh.registrar.metrics import RegistrarMetrics
from sipmesh.registrar.replies import challenge_response, error_response
from sipmesh.registrar.subscribers import SubscriberDirectory
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.sip.digest import (
    AuthStatus,
    DigestChallenge,
    DigestCredentials,
    DigestError,
    NonceFactory,
    check_authorization,
)
from sipmesh.sip.errors import ParseError
from sipmesh.sip.fields import parse_auth_params
from sipmesh.sip.message import Request, Response
from sipmesh.state.kv import KVStore

NC_PREFIX = "reg:nc:"
FAIL_SOURCE_PREFIX = "reg:authfail:src:"
FAIL_USER_PREFIX = "reg:authfail:user:"
LOCK_USER_PREFIX = "reg:lock:user:"


class AuthResult(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"
    FORBIDDEN = "forbidden"
    LOCKED_OUT = "locked-out"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    result: AuthResult
    response: Response | None = None
    user: str = ""
    domain: str = ""
    #: The header holding the credentials (for consume_credentials).
    header: str = ""

    @property
    def ok(self) -> bool:
        return self.result is AuthResult.OK


class Authenticator:
    def __init__(
        self,
        *,
        config: RegistrarConfig,
        directory: SubscriberDirectory,
        kv: KVStore,
        bans: BanList,
        nonces: NonceFactory,
        metrics: RegistrarMetrics,
        reload_nonces: Callable[[], Awaitable[NonceFactory | None]] | None = None,
    ) -> None:
        self._cfg = config
        self._dir = directory
        self._kv = kv
        self._bans = bans
        self._nonces = nonces
        self._metrics = metrics
        #: The shared secret as the key/value store has it now, when it is not ours.
        self._reload_nonces = reload_nonces

    def use_nonces(self, nonces: NonceFactory) -> None:
        """Sign and verify with another (the shared) secret from now on."""
        self._nonces = nonces

    def offered_algorithms(self) -> tuple[str, ...]:
        """The configured algorithms this deployment can verify for a typical account."""
        sha256 = self._cfg.calculate_ha1 or self._dir.sha256_columns
        usable = [
            alg
            for alg in self._cfg.algorithms
            if alg == "MD5" or self._cfg.calculate_ha1 or (alg == "SHA-256" and sha256)
        ]
        return tuple(usable) or ("MD5",)

    def challenge(
        self,
        request: Request,
        realm: str,
        now: float,
        *,
        proxy: bool,
        stale: bool = False,
        algorithms: tuple[str, ...] | None = None,
    ) -> Response:
        nonce = self._nonces.issue(now)
        challenges = [
            DigestChallenge(realm=realm, nonce=nonce, algorithm=alg, qop=("auth",), stale=stale)
            for alg in (algorithms or self.offered_algorithms())
        ]
        self._metrics.auth_challenges.inc()
        return challenge_response(request, challenges, proxy=proxy)

    def _outcome_challenge(
        self,
        request: Request,
        realm: str,
        now: float,
        proxy: bool,
        *,
        stale: bool = False,
        algorithms: tuple[str, ...] | None = None,
    ) -> AuthOutcome:
        response = self.challenge(
            request, realm, now, proxy=proxy, stale=stale, algorithms=algorithms
        )
        return AuthOutcome(AuthResult.CHALLENGE, response)

    @staticmethod
    def _credentials(request: Request, header: str, realm: str) -> DigestCredentials | None:
        """The Digest credentials for ``realm`` (RFC 3261 §22.4: match by realm)."""
        for value in request.get_instances(header):
            scheme, params = parse_auth_params(value)
            if scheme.lower() == "digest" and params.get("realm") == realm:
                return DigestCredentials.from_params(params)
        return None

    async def authenticate(
        self,
        request: Request,
        *,
        realm: str,
        proxy: bool,
        source: str,
        now: float,
        must_match: Aor | None = None,
    ) -> AuthOutcome:
        """www_authorize (proxy=False) / proxy_authorize (proxy=True).

        ``must_match``: the AOR the authenticated user must be (REGISTER: the To
        AOR, RFC 3261 §10.3 step 4), or an alias of (dbaliases).
        """
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            creds = self._credentials(request, header, realm)
        except (ParseError, DigestError):
            self._metrics.auth_failures.labels("malformed").inc()
            bad = error_response(request, 400, "Bad Request (malformed credentials)")
            return AuthOutcome(AuthResult.ERROR, bad, header=header)
        if creds is None:
            return self._outcome_challenge(request, realm, now, proxy)
        offered = self.offered_algorithms()
        algorithm = creds.algorithm or "MD5"
        if algorithm.upper() not in {a.upper() for a in offered} or creds.qop != "auth":
            # Only what we offered; RFC 2069 answers (no qop) have no replay protection.
            return self._outcome_challenge(request, realm, now, proxy)

        user, with_domain = creds.username, "@" in creds.username
        domain = realm
        if with_domain:
            user, _, domain = creds.username.rpartition("@")
        subscriber = await self._dir.get(user, domain, use_domain=self._cfg.use_domain)
        if subscriber is None:
            return await self._failed(request, realm, now, proxy, source, user, domain, "user")
        ha1 = subscriber.stored_ha1(
            algorithm, realm, with_domain=with_domain, calculate=self._cfg.calculate_ha1
        )
        if ha1 is None:
            # Nothing stored for this algorithm: ask again with those we can verify.
            verifiable = tuple(
                a
                for a in offered
                if subscriber.stored_ha1(
                    a, realm, with_domain=with_domain, calculate=self._cfg.calculate_ha1
                )
            )
            if not verifiable:
                return await self._failed(request, realm, now, proxy, source, user, domain, "ha1")
            return self._outcome_challenge(request, realm, now, proxy, algorithms=verifiable)

        checked = check_authorization(
            creds, request.method, now, self._nonces, realm=realm, ha1=ha1, body=request.body
        )
        if checked.status is AuthStatus.INVALID_NONCE and self._reload_nonces is not None:
            # Another instance may sign with a secret we do not know yet (the store
            # lost the shared one, e.g. Redis restarted empty, and that instance
            # started since): adopt the store's secret and verify once more.
            shared = await self._reload_nonces()
            if shared is not None:
                self._nonces = shared
                checked = check_authorization(
                    creds, request.method, now, shared, realm=realm, ha1=ha1, body=request.body
                )
        if checked.status is AuthStatus.STALE_NONCE:
            # RFC 7616 §3.3: the password was right; only the nonce is old.
            return self._outcome_challenge(request, realm, now, proxy, stale=True)
        if checked.status in (AuthStatus.INVALID_NONCE, AuthStatus.REALM_MISMATCH):
            return self._outcome_challenge(request, realm, now, proxy)
        if checked.status is not AuthStatus.OK:
            return await self._failed(request, realm, now, proxy, source, user, domain, "password")

        account = f"{subscriber.username}@{subscriber.domain}"
        batch = self._kv.batch()
        locked = batch.get(LOCK_USER_PREFIX + account)
        fresh = None
        if checked.nonce_use is not None:
            use = checked.nonce_use
            fresh = batch.set_if_absent(
                f"{NC_PREFIX}{use.nonce}:{use.nc}", b"1", ttl=max(1.0, use.expires_at - now)
            )
        await batch.execute()
        if locked.value is not None:
            self._metrics.auth_failures.labels("locked").inc()
            return AuthOutcome(
                AuthResult.LOCKED_OUT, error_response(request, 403, "Forbidden (locked out)")
            )
        if fresh is not None and not fresh.value:
            # The same (nonce, nc) was accepted before, here or on another instance.
            return await self._failed(request, realm, now, proxy, source, user, domain, "replay")

        if must_match is not None and not await self._may_act_for(
            subscriber.username, subscriber.domain, must_match
        ):
            self._metrics.auth_failures.labels("mismatch").inc()
            return AuthOutcome(
                AuthResult.FORBIDDEN,
                error_response(request, 403, "Forbidden (authentication user mismatch)"),
                subscriber.username,
                subscriber.domain,
                header,
            )
        self._metrics.auth_successes.inc()
        return AuthOutcome(AuthResult.OK, None, subscriber.username, subscriber.domain, header)

    async def _may_act_for(self, user: str, domain: str, aor: Aor) -> bool:
        same_domain = not self._cfg.use_domain or domain.lower() == aor.domain.lower()
        if user == aor.user and same_domain:
            return True
        target = await self._dir.alias_target(aor.user, aor.domain)
        return target is not None and target[0] == user and target[1].lower() == domain.lower()

    async def _failed(
        self,
        request: Request,
        realm: str,
        now: float,
        proxy: bool,
        source: str,
        user: str,
        domain: str,
        reason: str,
    ) -> AuthOutcome:
        """Count the failure per source and per user; lock out past the thresholds."""
        self._metrics.auth_failures.labels(reason).inc()
        cfg = self._cfg
        account = f"{user}@{domain}"
        batch = self._kv.batch()
        window = float(cfg.lockout_window)
        by_source = batch.incr(FAIL_SOURCE_PREFIX + source, ttl=window) if source else None
        by_user = batch.incr(FAIL_USER_PREFIX + account, ttl=window)
        locked = batch.get(LOCK_USER_PREFIX + account)
        await batch.execute()
        lock_reply = error_response(request, 403, "Forbidden (locked out)")
        if (
            by_source is not None
            and cfg.lockout_source_failures
            and by_source.value >= cfg.lockout_source_failures
        ):
            await self._bans.ban(source, float(cfg.lockout_time), "auth lockout")
            self._metrics.auth_lockouts.labels("source").inc()
            return AuthOutcome(AuthResult.LOCKED_OUT, lock_reply)
        if locked.value is not None:
            return AuthOutcome(AuthResult.LOCKED_OUT, lock_reply)
        if cfg.lockout_user_failures and by_user.value >= cfg.lockout_user_failures:
            await self._kv.set(LOCK_USER_PREFIX + account, b"1", ttl=float(cfg.lockout_time))
            self._metrics.auth_lockouts.labels("user").inc()
            return AuthOutcome(AuthResult.LOCKED_OUT, lock_reply)
        if cfg.wrong_credentials_reply == "forbidden":
            return AuthOutcome(AuthResult.FORBIDDEN, error_response(request, 403, "Forbidden"))
        return self._outcome_challenge(request, realm, now, proxy)
