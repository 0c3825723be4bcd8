"""PUBLISH: event state publication (RFC 3903 §6), Kamailio's handle_publish.

Initial publication (no SIP-If-Match, a body), refresh (SIP-If-Match, no body),
modification (SIP-If-Match and a body) and removal (SIP-If-Match, Expires: 0). Each
success gets a new entity tag in SIP-ETag (§6 step 7); an unknown tag gets 412
(step 2); an event package we do not serve gets 489 (step 1); a body its package
refuses gets 400 or 415 (step 4). Bodies are kept exactly as published.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable

from sipmesh.gen.sipmesh.v1 import presence_pb2
from sipmesh.presence.model import Publication, presentity_uri, split_uri
from sipmesh.presence.packages import BadBody, Package
from sipmesh.presence.replies import Reject, check_interval, event_package, parse_expires, reply
from sipmesh.presence.store import PresenceStore
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.sip import Request

Announce = Callable[[str, str], Awaitable[None]]


def new_etag() -> str:
    return "a" + secrets.token_hex(8)


class PublishHandler:
    def __init__(
        self,
        config: PresenceConfig,
        store: PresenceStore,
        packages: dict[str, Package],
        announce: Announce,
    ) -> None:
        self._config = config
        self._store = store
        self._packages = packages
        self._announce = announce

    def allow_events(self) -> str:
        return ", ".join(sorted(self._packages))

    def package(self, request: Request, *, publish: bool) -> Package:
        name, _ = event_package(request)
        package = self._packages.get(name)
        if package is None or (publish and not package.publishable):
            # RFC 3903 §6 step 1 / RFC 6665 §4.2.1.1: 489 with the packages we serve.
            raise Reject(489, "Bad Event", [("Allow-Events", self.allow_events())])
        return package

    async def handle(self, request: Request, now: int) -> presence_pb2.HandleReply:
        package = self.package(request, publish=True)
        user, domain = split_uri(request.uri)
        expires = check_interval(
            parse_expires(request, self._config.default_expires),
            self._config.min_expires,
            self._config.max_expires,
        )
        if_match = (request.get("SIP-If-Match") or "").strip()
        body = request.body
        content_type = request.get("Content-Type") or ""
        if body:
            try:
                package.validate(body, content_type)
            except BadBody as exc:
                headers = [("Accept", package.content_type)] if exc.status == 415 else []
                raise Reject(exc.status, exc.reason, headers) from None
        uri = presentity_uri(user, domain)
        if not if_match:
            if not body:
                # §6 step 4: an initial PUBLISH must carry state.
                raise Reject(400, "Missing body")
            if expires == 0:
                raise Reject(400, "Expires 0 without SIP-If-Match")
            etag = new_etag()
            await self._store.insert_publication(
                Publication(
                    username=user,
                    domain=domain,
                    event=package.name,
                    etag=etag,
                    expires=now + expires,
                    received_time=now,
                    body=body,
                    sender=request.get("Contact") or str(request.from_.uri),
                ),
                uuid.uuid4().hex,
            )
            await self._announce(package.name, uri)
            return reply(request, 200, headers=[("SIP-ETag", etag), ("Expires", str(expires))])
        old = await self._store.get_publication(user, domain, package.name, if_match)
        if old is None or old.expires <= now:
            raise Reject(412, "Conditional Request Failed")
        if expires == 0:
            # §6 step 6: removal; the response carries the tag and Expires: 0.
            await self._store.delete_publication(user, domain, package.name, if_match)
            await self._announce(package.name, uri)
            return reply(request, 200, headers=[("SIP-ETag", if_match), ("Expires", "0")])
        etag = new_etag()
        ok = await self._store.replace_publication(old, etag, now + expires, now, body or None)
        if not ok:
            raise Reject(412, "Conditional Request Failed")
        if body:
            await self._announce(package.name, uri)
        return reply(request, 200, headers=[("SIP-ETag", etag), ("Expires", str(expires))])
