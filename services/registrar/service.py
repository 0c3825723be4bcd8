"""The registrar service: save (REGISTER), authentication, lookup, location admin.

Wires the pure core (core.py) to the location store, the subscriber tables, the
key/value store (nonce counts, failure counters, bans), persistence and events.
Its plain-Python API is what api.py exposes through the registrar contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from sipmesh.bans import BanList
from sipmesh.registrar.aor import Aor, AorError, aor_from_uri, parse_aor
from sipmesh.registrar.auth import Authenticator, AuthOutcome, AuthResult
from sipmesh.registrar.core import (
    METHOD_BITS,
    Change,
    ChangeKind,
    Outcome,
    Policy,
    Rejected,
    SourceFacts,
    apply_register,
    parse_register,
    same_contact,
)
from sipmesh.registrar.events import EventPublisher
from sipmesh.registrar.metrics import RegistrarMetrics
from sipmesh.registrar.persistence import LocationPersistence
from sipmesh.registrar.replies import error_response, ok_response
from sipmesh.registrar.subscribers import SubscriberDirectory
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.sip.digest import NonceFactory
from sipmesh.sip.errors import ParseError
from sipmesh.sip.message import Request, Response
from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database
from sipmesh.state.errors import StateError
from sipmesh.state.kv import KVStore
from sipmesh.state.location import Binding, LocationStore

log = logging.getLogger("sipmesh.registrar")

NONCE_SECRET_KEY = "reg:nonce-secret"
#: Set in the key/value store once the location table was loaded into the store;
#: gone when the store lost its data (Redis restarted empty) with the bindings.
LOCATION_LOADED_KEY = "reg:location-loaded"
# save() flags (Kamailio's registrar): 0x02 memory only, 0x04 one contact, 0x08 no Path.
SAVE_MEMORY_ONLY = 0x02
SAVE_ONE_CONTACT = 0x04
SAVE_NO_PATH = 0x08
#: "Permanent" bindings added by hand live this long (usrloc keeps them forever).
PERMANENT_SECONDS = 10 * 365 * 86400.0


@dataclass
class SaveResult:
    response: Response
    aor: str = ""
    bindings: list[Binding] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    authenticated_user: str = ""


@dataclass
class LookupResult:
    found: bool
    aor: str
    bindings: list[Binding]
    method_not_allowed: bool = False


class RegistrarService:
    def __init__(
        self,
        *,
        config: RegistrarConfig,
        domains: Sequence[str],
        instance_id: str,
        store: LocationStore,
        kv: KVStore,
        db: Database,
        bus: EventBus,
        registry: CollectorRegistry,
        clock: Callable[[], float],
        run_timer: bool = True,
    ) -> None:
        self.config = config
        self._domains = frozenset(d.lower() for d in domains)
        self._default_domain = domains[0].lower() if domains else ""
        self.instance_id = instance_id
        self.store = store
        self.kv = kv
        self.db = db
        self.clock = clock
        self.metrics = RegistrarMetrics(registry)
        self.directory = SubscriberDirectory(db, clock)
        self.bans = BanList(kv)
        self.events = EventPublisher(bus, instance_id)
        self.persistence = LocationPersistence(
            db,
            store,
            mode=config.db_mode,
            use_domain=config.use_domain,
            on_write=self.metrics.db_flushes.inc,
        )
        self.policy = Policy(
            default_expires=config.default_expires,
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            max_contacts=config.max_contacts,
            replace_oldest=config.max_contacts_policy == "replace-oldest",
            path_mode=config.path_mode,
            outbound_mode=config.outbound_mode,
        )
        self._auth: Authenticator | None = None
        self._secret = b""
        self._run_timer = run_timer
        self._timer: asyncio.Task[None] | None = None
        self._started = False
        for gauge, value in (
            (self.metrics.max_expires, config.max_expires),
            (self.metrics.min_expires, config.min_expires),
            (self.metrics.default_expires, config.default_expires),
            (self.metrics.max_contacts, config.max_contacts),
        ):
            gauge.set(value)

    # -- lifecycle -------------------------------------------------------------

    async def _nonce_secret(self, mine: bytes | None = None) -> bytes:
        configured = self.config.nonce_secret.get_secret_value()
        if configured:
            return configured.encode()
        # Every instance must verify the nonces of every other: share one secret.
        await self.kv.set_if_absent(NONCE_SECRET_KEY, mine or os.urandom(32).hex().encode())
        secret = await self.kv.get(NONCE_SECRET_KEY)
        if not secret:
            raise StateError("nonce secret vanished from the key/value store")
        return secret

    async def sync_nonce_secret(self) -> NonceFactory | None:
        """The shared secret again after the store lost it (Redis restarted empty).

        Puts our secret back when the key is missing (so an instance started later
        takes it instead of making its own) and returns a factory for the store's
        secret when it is not the one we sign with (another instance stored its
        own first); None when nothing changed.
        """
        if self.config.nonce_secret.get_secret_value() or not self._secret:
            return None
        shared = await self._nonce_secret(self._secret)
        if shared == self._secret:
            return None
        log.warning("registrar: adopting the nonce secret of the key/value store")
        self._secret = shared
        return NonceFactory(shared, float(self.config.nonce_expire))

    @property
    def auth(self) -> Authenticator:
        if self._auth is None:
            raise RuntimeError("registrar not started")
        return self._auth

    async def start(self) -> None:
        await self.directory.probe()
        self._secret = await self._nonce_secret()
        nonces = NonceFactory(self._secret, float(self.config.nonce_expire))
        self._auth = Authenticator(
            config=self.config,
            directory=self.directory,
            kv=self.kv,
            bans=self.bans,
            nonces=nonces,
            metrics=self.metrics,
            reload_nonces=self.sync_nonce_secret,
        )
        if self.persistence.enabled:
            await self._load_location()
        await self.refresh_gauges()
        if self._run_timer:
            self._timer = asyncio.create_task(self._timer_loop(), name="registrar-timer")
        self._started = True

    async def _load_location(self) -> None:
        """usrloc's preload, only into a store that lost its bindings.

        A store shared with running instances (Redis) is newer than the table (in
        write-back by up to timer_interval): loading it again would bring back
        bindings removed since the last flush. The marker lives in the same store,
        so it disappears exactly when the bindings do; it is set after a complete
        load (concurrent loads are harmless: the merge keeps the newer binding).
        """
        if await self.kv.get(LOCATION_LOADED_KEY) is not None:
            log.info("registrar: location store already loaded; table not read")
            return
        loaded = await self.persistence.load(self.clock())
        await self.kv.set(LOCATION_LOADED_KEY, b"1")
        log.info("registrar: %d bindings loaded from the location table", loaded)

    async def stop(self, grace: float) -> None:
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self.persistence.mode == "write-back":
            try:
                async with asyncio.timeout(max(grace, 1.0)):
                    await self.persistence.flush()
            except (StateError, TimeoutError) as exc:
                log.error("registrar: write-back flush at stop failed: %s", exc)

    def ready(self) -> bool:
        return self._started and self.store.healthy and self.kv.healthy and self.db.healthy

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.timer_interval)
            try:
                await self.timer_tick()
            except StateError as exc:
                log.warning("registrar timer: %s", exc)

    async def timer_tick(self) -> list[Binding]:
        """usrloc's timer: sweep expired bindings, flush write-back, refresh gauges."""
        if self._auth is not None and (shared := await self.sync_nonce_secret()) is not None:
            self._auth.use_nonces(shared)
        expired = await self.sweep()
        if self.persistence.mode == "write-back":
            await self.persistence.flush()
        await self.refresh_gauges()
        return expired

    async def sweep(self) -> list[Binding]:
        """Remove expired bindings (each reported by exactly one instance) and announce."""
        expired = await self.store.sweep(self.clock())
        if not expired:
            return []
        self.metrics.expired_contacts.inc(len(expired))
        changes = [Change(ChangeKind.EXPIRED, b) for b in expired]
        aors = sorted({b.aor for b in expired})
        current = await self.store.get_many(aors)
        await self.events.publish(changes, {a: len(current.get(a, [])) for a in aors}, self.clock())
        for aor in aors:
            await self.persistence.changed(aor)
        return expired

    async def refresh_gauges(self) -> None:
        self.metrics.registered_users.set(len(await self.store.list_aors()))
        self.metrics.registered_contacts.set(await self.store.count())

    # -- domains and AORs --------------------------------------------------------

    async def is_local_domain(self, domain: str) -> bool:
        d = domain.lower()
        return d in self._domains or d in await self.directory.table_domains()

    def key(self, aor: Aor) -> str:
        return aor.key(self.config.use_domain)

    # -- save ------------------------------------------------------------------

    def _reject(
        self,
        request: Request,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> SaveResult:
        self.metrics.rejected_regs.labels(str(status)).inc()
        return SaveResult(error_response(request, status, reason, headers))

    async def save(
        self,
        request: Request,
        facts: SourceFacts,
        *,
        authenticate: bool | None = None,
        realm: str = "",
        authenticated_user: str = "",
        fix_nated: bool = False,
        flags: int = 0,
    ) -> SaveResult:
        """RFC 3261 §10.3 for one REGISTER; always returns the response to send."""
        now = self.clock()
        try:
            aor = aor_from_uri(request.to.uri)
        except (ParseError, AorError) as exc:
            return self._reject(request, 400, f"Bad Request ({exc})")
        if not await self.is_local_domain(aor.domain):
            # §10.3 steps 1 and 5: not a domain of ours.
            return self._reject(request, 404, "Not Found (domain not served here)")
        key = self.key(aor)

        user = authenticated_user
        must_auth = self.config.auth_register if authenticate is None else authenticate
        if must_auth and not user:
            outcome = await self.auth.authenticate(
                request,
                realm=realm or self.config.realm or aor.domain,
                proxy=False,
                source=facts.remote_host,
                now=now,
                must_match=aor,
            )
            if not outcome.ok:
                assert outcome.response is not None
                if outcome.result is not AuthResult.CHALLENGE:
                    self.metrics.rejected_regs.labels(str(outcome.response.status)).inc()
                return SaveResult(outcome.response, aor=key)
            user = f"{outcome.user}@{outcome.domain}"

        policy = self.policy
        if flags & SAVE_ONE_CONTACT:
            policy = dataclasses.replace(policy, max_contacts=1, replace_oldest=True)
        try:
            plan = parse_register(request, key, facts, policy, fix_nated=fix_nated)
            if flags & SAVE_NO_PATH:
                plan = dataclasses.replace(plan, path=(), echo_path=False)
            if plan.is_query:
                # §10.3 step 8 for a query: just the current bindings.
                bindings = await self.store.get(key)
                response = ok_response(request, bindings, now)
                self.metrics.accepted_regs.inc()
                return SaveResult(response, key, bindings, [], user)
            box: list[Outcome] = []

            def update(current: list[Binding]) -> list[Binding]:
                box.clear()
                box.append(apply_register(plan, current, policy, now))
                return box[0].bindings

            bindings = await self.store.update(key, update)
        except Rejected as rej:
            return self._reject(request, rej.status, rej.reason, rej.headers)
        changes = box[0].changes
        if changes:
            for change in changes:
                self.metrics.binding_changes.labels(change.kind.value).inc()
            await self.events.publish(changes, {key: len(bindings)}, now)
            if not flags & SAVE_MEMORY_ONLY:
                await self.persistence.changed(key)
        response = ok_response(
            request,
            bindings,
            now,
            path=plan.path if plan.echo_path else (),
            outbound=plan.outbound,
        )
        self.metrics.accepted_regs.inc()
        return SaveResult(response, key, bindings, changes, user)

    # -- authentication for other requests ---------------------------------------

    async def authorize(
        self,
        request: Request,
        facts: SourceFacts,
        *,
        realm: str = "",
        proxy: bool | None = None,
        check_user: bool = False,
    ) -> AuthOutcome:
        """www_authorize / proxy_authorize (407 for anything but REGISTER by default)."""
        as_proxy = request.method != "REGISTER" if proxy is None else proxy
        try:
            identity = aor_from_uri((request.from_ if as_proxy else request.to).uri)
        except (ParseError, AorError) as exc:
            bad = error_response(request, 400, f"Bad Request ({exc})")
            return AuthOutcome(AuthResult.ERROR, bad)
        return await self.auth.authenticate(
            request,
            realm=realm or self.config.realm or identity.domain,
            proxy=as_proxy,
            source=facts.remote_host,
            now=self.clock(),
            must_match=identity if check_user else None,
        )

    # -- lookup and location admin -----------------------------------------------

    async def resolve(self, text: str, *, resolve_aliases: bool = True) -> str:
        aor = parse_aor(text, self._default_domain)
        if resolve_aliases:
            target = await self.directory.alias_target(aor.user, aor.domain)
            if target is not None:
                aor = Aor(target[0], target[1].lower())
        return self.key(aor)

    async def lookup_aor(
        self, text: str, *, method: str = "", resolve_aliases: bool = True
    ) -> LookupResult:
        """lookup("location"): bindings by q, then most recently refreshed first."""
        key = await self.resolve(text, resolve_aliases=resolve_aliases)
        bindings = await self.store.get(key)
        if not bindings:
            return LookupResult(False, key, [])
        if method and self.config.method_filtering:
            bit = METHOD_BITS.get(method.upper(), 0)
            allowed = [b for b in bindings if b.methods is None or not bit or b.methods & bit]
            if not allowed:
                return LookupResult(False, key, [], method_not_allowed=True)
            bindings = allowed
        return LookupResult(True, key, bindings)

    async def show(self, text: str = "") -> list[Binding]:
        if text:
            return await self.store.get(await self.resolve(text, resolve_aliases=False))
        aors = await self.store.list_aors()
        by_aor = await self.store.get_many(aors)
        return [b for aor in aors for b in by_aor.get(aor, [])]

    async def remove(self, text: str, contact: str = "") -> int:
        """``ul rm``: every binding of an AOR, or one contact; announced as removed."""
        key = await self.resolve(text, resolve_aliases=False)
        removed: list[Binding] = []

        def drop(current: list[Binding]) -> list[Binding]:
            removed.clear()
            keep = []
            for b in current:
                if not contact or same_contact(b.contact, contact):
                    removed.append(b)
                else:
                    keep.append(b)
            return keep

        left = await self.store.update(key, drop)
        if removed:
            changes = [Change(ChangeKind.REMOVED, b) for b in removed]
            await self.events.publish(changes, {key: len(left)}, self.clock())
            await self.persistence.changed(key)
        return len(removed)

    async def add(self, binding: Binding) -> Binding:
        """``ul add``: a binding set by hand (expires_at 0 = permanent)."""
        now = self.clock()
        key = await self.resolve(binding.aor, resolve_aliases=False)
        made = dataclasses.replace(
            binding,
            aor=key,
            expires_at=binding.expires_at or now + PERMANENT_SECONDS,
            last_modified=now,
            ruid=binding.ruid or uuid.uuid4().hex,
            call_id=binding.call_id or f"ul-add-{uuid.uuid4().hex}",
        )
        existed: list[Binding] = []

        def put(current: list[Binding]) -> list[Binding]:
            existed[:] = [b for b in current if b.contact == made.contact]
            return [b for b in current if b.contact != made.contact] + [made]

        left = await self.store.update(key, put)
        kind = ChangeKind.REFRESHED if existed else ChangeKind.ADDED
        await self.events.publish([Change(kind, made)], {key: len(left)}, now)
        await self.persistence.changed(key)
        return made
