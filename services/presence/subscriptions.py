"""The subscriptions this instance owns: NOTIFY on change, expiry, takeover.

A state change is announced on the bus by whichever instance stored it; every
instance looks at the subscriptions it holds in memory for that resource, confirms
in one KV round trip that it still owns them (a refresh may have moved one to
another instance), and sends their NOTIFYs. One NOTIFY at a time per subscription,
so CSeq numbers and versions go out in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sipmesh.presence.model import ACTIVE, PENDING, STATUS_NAMES, Subscription, split_uri
from sipmesh.presence.notifier import Notifier, SendOutcome, build_notify
from sipmesh.presence.packages import ComposeInput, Package, WatcherEntry
from sipmesh.presence.store import PresenceStore, flow_of
from sipmesh.state.errors import StateError

log = logging.getLogger("sipmesh.presence")

Announce = Callable[[str, str], Awaitable[None]]
# Owner records outlive the subscription a little, so a late refresh still finds it.
OWNER_MARGIN = 60.0


class SubscriptionManager:
    def __init__(
        self,
        *,
        instance_id: str,
        store: PresenceStore,
        packages: dict[str, Package],
        notifier: Notifier,
        announce: Announce,
        user_agent: str = "sipmesh presence",
    ) -> None:
        self.instance_id = instance_id
        self._store = store
        self._packages = packages
        self.notifier = notifier
        self._announce = announce
        self._user_agent = user_agent
        self.owned: dict[str, Subscription] = {}
        self._by_resource: dict[tuple[str, str], set[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.notifies_sent = 0

    # -- ownership ---------------------------------------------------------------------

    async def take(self, sub: Subscription, now: int) -> None:
        """Record this instance as the owner and keep ``sub`` in memory."""
        await self._store.set_owner(sub, self.instance_id, sub.expires - now + OWNER_MARGIN)
        self.own(sub)

    def own(self, sub: Subscription) -> None:
        self.owned[sub.key] = sub
        self._by_resource.setdefault((sub.presentity_uri, sub.event), set()).add(sub.key)

    def forget(self, sub: Subscription) -> None:
        self.owned.pop(sub.key, None)
        keys = self._by_resource.get((sub.presentity_uri, sub.event))
        if keys is not None:
            keys.discard(sub.key)
            if not keys:
                del self._by_resource[(sub.presentity_uri, sub.event)]

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- state -----------------------------------------------------------------------

    async def load_state(self, package: Package, uri: str, now: int) -> ComposeInput:
        state = ComposeInput(presentity_uri=uri)
        if package.needs_watchers:
            subs = await self._store.subscriptions_of(uri, "presence")
            state.watchers = [
                WatcherEntry(
                    id=s.key,
                    uri=s.watcher_uri,
                    status=STATUS_NAMES.get(s.status, "terminated"),
                    event="subscribe" if s.status != ACTIVE else "approved",
                )
                for s in subs
                if s.expires > now
            ]
        else:
            user, domain = split_uri(uri)
            state.publications = await self._store.publications(user, domain, package.name, now)
        return state

    # -- NOTIFY ------------------------------------------------------------------------

    async def notify(
        self,
        sub: Subscription,
        now: int,
        *,
        state: ComposeInput | None = None,
        terminate: str = "",
    ) -> SendOutcome:
        """Send the next NOTIFY of ``sub`` (``terminate``: the final one, with that reason)."""
        package = self._packages[sub.event]
        async with self._lock(sub.key):
            body: bytes | None = None
            with_state = sub.status == ACTIVE and terminate in ("", "timeout", "noresource")
            if with_state:
                if state is None:
                    state = await self.load_state(package, sub.presentity_uri, now)
                body = package.compose(replace(state, version=sub.version))
            sub.local_cseq += 1
            sub.version += 1 if with_state else 0
            name = "terminated" if terminate else STATUS_NAMES.get(sub.status, "active")
            request = build_notify(
                sub,
                state=name,
                expires=sub.expires - now,
                reason=terminate,
                body=body,
                content_type=package.content_type,
                user_agent=self._user_agent,
            )
            if terminate:
                await self._drop(sub)
            else:
                await self._store.update_subscription(sub, now)
            outcome = await self.notifier.send(sub, request)
            self.notifies_sent += 1
            if outcome is SendOutcome.TERMINATE and not terminate:
                # RFC 6665 §4.2.2: 481 / timeout / dead flow: the subscription is gone.
                log.debug("subscription %s ended by the NOTIFY's outcome", sub.key)
                await self._drop(sub)
            return outcome

    async def _drop(self, sub: Subscription) -> None:
        self.forget(sub)
        self._locks.pop(sub.key, None)
        await self._store.delete_subscription(sub)
        if sub.event == "presence":
            await self._announce("presence.winfo", sub.presentity_uri)

    def schedule(
        self, sub: Subscription, now: int, delay: float = 0.0, terminate: str = ""
    ) -> None:
        """NOTIFY in the background (after the SUBSCRIBE's response has been decided)."""

        async def run() -> None:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self.notify(sub, now, terminate=terminate)
            except StateError as exc:
                log.warning("NOTIFY for %s not sent: %s", sub.key, exc)

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        """Wait for every background NOTIFY (tests, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # -- events ------------------------------------------------------------------------

    async def on_change(self, event: str, uri: str, now: int) -> int:
        """A resource changed: NOTIFY the subscriptions this instance owns. Returns how many."""
        keys = sorted(self._by_resource.get((uri, event), ()))
        if not keys:
            return 0
        records = await self._store.owners(keys)
        mine: list[Subscription] = []
        for key, record in zip(keys, records, strict=True):
            sub = self.owned.get(key)
            if sub is None:
                continue
            if record is None or record.get("owner") != self.instance_id:
                self.forget(sub)  # taken over by another instance, or gone
                continue
            mine.append(sub)
        if not mine:
            return 0
        package = self._packages.get(event)
        if package is None:
            return 0
        state = await self.load_state(package, uri, now)
        await asyncio.gather(*(self._notify_change(s, now, state) for s in mine))
        return len(mine)

    async def _notify_change(self, sub: Subscription, now: int, state: ComposeInput) -> None:
        if sub.status != ACTIVE:
            return  # pending watchers learn nothing of the state (RFC 3856 §6.6.2)
        try:
            await self.notify(sub, now, state=state)
        except StateError as exc:
            log.warning("NOTIFY for %s not sent: %s", sub.key, exc)

    async def expire(self, now: int) -> int:
        """Terminate owned subscriptions whose time is up (reason=timeout, RFC 6665 §4.2.2)."""
        due = [s for s in list(self.owned.values()) if s.expires <= now]
        count = 0
        for sub in due:
            current = await self._store.get_subscription(sub.callid, sub.to_tag, sub.from_tag)
            if current is None:
                self.forget(sub)
                continue
            if current.expires > now:
                # Refreshed through another instance meanwhile: follow the table.
                self.forget(sub)
                record = (await self._store.owners([sub.key]))[0]
                if record is not None and record.get("owner") == self.instance_id:
                    current.flow = flow_of(record)
                    self.own(current)
                continue
            await self.notify(sub, now, terminate="timeout")
            count += 1
        return count

    async def adopt(self, now: int) -> int:
        """Take over subscriptions whose owner is gone (its alive key expired)."""
        rows = [s for s in await self._store.all_subscriptions() if s.key not in self.owned]
        if not rows:
            return 0
        records = await self._store.owners([s.key for s in rows])
        alive = await self._store.alive([r["owner"] for r in records if r is not None])
        adopted = 0
        for sub, record in zip(rows, records, strict=True):
            owner = str(record.get("owner")) if record is not None else ""
            if owner == self.instance_id:
                sub.flow = flow_of(record)
                self.own(sub)  # ours from before a restart
                continue
            if owner and alive.get(owner, False):
                continue
            if not await self._store.claim(sub.key, self.instance_id, ttl=30.0):
                continue
            sub.flow = flow_of(record)
            await self.take(sub, now)
            adopted += 1
        return adopted

    async def refresh_status(
        self, uri: str, decide: Callable[[Subscription], Awaitable[int]], now: int
    ) -> None:
        """Re-evaluate the policy for this instance's subscriptions to ``uri``'s presence."""
        for key in sorted(self._by_resource.get((uri, "presence"), ())):
            sub = self.owned.get(key)
            if sub is None:
                continue
            status = await decide(sub)
            if status == sub.status:
                continue
            if status in (ACTIVE, PENDING):
                sub.status = status
                await self.notify(sub, now)
            else:
                sub.status = status
                await self.notify(sub, now, terminate="rejected")
            await self._announce("presence.winfo", uri)
