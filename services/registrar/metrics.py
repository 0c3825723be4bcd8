"""Registrar statistics under Kamailio's names (registrar, usrloc and auth modules).

Registered on the runtime's CollectorRegistry, never the global one. Gauges of the
location store (registered_users/contacts) are refreshed by the timer, not per
REGISTER (each refresh is a store round trip).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RegistrarMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "sipmesh_"
        # registrar module
        self.accepted_regs = Counter(
            p + "accepted_regs", "REGISTERs answered 200", registry=registry
        )
        self.rejected_regs = Counter(
            p + "rejected_regs", "REGISTERs answered with an error", ["code"], registry=registry
        )
        self.max_expires = Gauge(p + "max_expires", "configured max_expires", registry=registry)
        self.min_expires = Gauge(p + "min_expires", "configured min_expires", registry=registry)
        self.default_expires = Gauge(
            p + "default_expires", "configured default_expires", registry=registry
        )
        self.max_contacts = Gauge(p + "max_contacts", "configured max_contacts", registry=registry)
        # usrloc module
        self.registered_users = Gauge(
            p + "registered_users", "AORs with at least one binding", registry=registry
        )
        self.registered_contacts = Gauge(
            p + "registered_contacts", "live bindings", registry=registry
        )
        self.expired_contacts = Counter(
            p + "expired_contacts", "bindings removed by expiry", registry=registry
        )
        self.binding_changes = Counter(
            p + "location_changes", "bindings added/refreshed/removed", ["kind"], registry=registry
        )
        # auth module
        self.auth_challenges = Counter(
            p + "auth_challenges", "401/407 challenges sent", registry=registry
        )
        self.auth_successes = Counter(
            p + "auth_successes", "successful digest authentications", registry=registry
        )
        self.auth_failures = Counter(
            p + "auth_failures", "failed authentications", ["reason"], registry=registry
        )
        self.auth_lockouts = Counter(
            p + "auth_lockouts", "sources banned or users locked", ["kind"], registry=registry
        )
        self.db_flushes = Counter(
            p + "location_db_writes", "location rows written or deleted", registry=registry
        )
