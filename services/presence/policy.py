"""Who may watch whom (Kamailio's presence authorisation, without XCAP).

- ``allow``: every watcher is active (presence's default without xcap rules).
- ``domain``: only watchers of the presentity's own domain; others get 403.
- ``watchers``: the decision stored per watcher in the ``watchers`` table (status
  1 allow, 3 block); an unknown watcher is recorded as pending (2), gets 202 and a
  "pending" NOTIFY, and shows up in the presentity's watcher information (RFC 3857
  §3.2) until someone allows or blocks it (admin API or table, then
  ``PresenceService.refresh_watchers``).

A user watching their own state, and presence.winfo subscriptions of the
presentity itself, are always allowed. Only the ``presence`` package is subject to
the per-watcher rules, as in Kamailio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sipmesh.presence.model import ACTIVE, PENDING, TERMINATED
from sipmesh.presence.store import PresenceStore


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # ACTIVE, PENDING or TERMINATED (= forbidden)
    reason: str = ""


class Policy:
    def __init__(self, mode: Literal["allow", "domain", "watchers"], store: PresenceStore) -> None:
        self.mode = mode
        self._store = store

    async def decide(
        self,
        presentity_uri: str,
        presentity_domain: str,
        watcher_user: str,
        watcher_domain: str,
        event: str,
        now: int,
        *,
        own: bool,
    ) -> Decision:
        if own or self.mode == "allow":
            return Decision(ACTIVE)
        if self.mode == "domain":
            if watcher_domain.lower() == presentity_domain.lower():
                return Decision(ACTIVE)
            return Decision(TERMINATED, "rejected")
        if event != "presence":
            return Decision(ACTIVE)
        found = await self._store.watcher_status(
            presentity_uri, watcher_user, watcher_domain, event
        )
        if found is None:
            await self._store.add_pending_watcher(
                presentity_uri, watcher_user, watcher_domain, event, now
            )
            return Decision(PENDING)
        status, reason = found
        if status == ACTIVE:
            return Decision(ACTIVE)
        if status == PENDING:
            return Decision(PENDING)
        return Decision(TERMINATED, reason or "rejected")
