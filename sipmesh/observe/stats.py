"""The naming layer of sipmesh statistics: Kamailio's names as Prometheus metrics.

Choice (documented in docs/observability.md): every statistic is the Prometheus
metric ``sipmesh_<kamailio name>`` — ``sipmesh_rcv_requests_total{method="INVITE"}``
for Kamailio's ``core:rcv_requests_invite`` — registered on the process's own
registry (``runtime.metrics``). Kamailio's per-method / per-class / per-code
variants (rcv_requests_<method>, <class>_transactions, sl <code>_replies) are labels
of one family, which is what PromQL expects. A user of kamailio_exporter finds the
same statistic under the same last word (kamailio_exporter prefixes the module:
``kamailio_sl_stats_codes_total{code}`` ↔ ``sipmesh_sl_replies_total{code}``); the
mapping is the table :data:`KAMAILIO_STATS` below and docs/observability.md. The
``sipmesh_`` prefix (not ``kamailio_``) keeps both on one Prometheus without
clashes, and is what the admin service's ``stats`` verb turns back into Kamailio's
``group:name`` (sipmesh.runtime.cluster.stat_name).

Labels: Prometheus itself adds ``instance`` (the scraped address) and ``job``;
``sipmesh_instance_info{instance_id, service, target, version} 1`` names the process
behind that address, so any statistic can be joined to its service and target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "KAMAILIO_STATS",
    "PREFIX",
    "Stat",
    "counter",
    "gauge",
    "histogram",
    "kamailio_name",
    "register_instance_info",
]

PREFIX = "sipmesh_"


@dataclass(frozen=True, slots=True)
class Stat:
    """One statistic: sipmesh metric family (without prefix) ↔ Kamailio group:name."""

    name: str
    group: str
    kamailio: str
    labels: str = ""


def _s(name: str, group: str, kamailio: str = "", labels: str = "") -> Stat:
    return Stat(name, group, kamailio or name, labels)


#: Every statistic sipmesh exposes, with the Kamailio statistic it stands for.
#: (``kamailio`` names with ``<label>`` are Kamailio's per-value statistics.)
KAMAILIO_STATS: tuple[Stat, ...] = (
    # core (edge)
    _s("rcv_requests", "core", "rcv_requests, rcv_requests_<method>", "method"),
    _s("rcv_replies", "core", "rcv_replies, rcv_replies_<class>xx", "class_"),
    _s("fwd_requests", "core"),
    _s("fwd_replies", "core"),
    _s("drop_requests", "core", "drop_requests", "reason"),
    _s("drop_replies", "core"),
    _s("err_requests", "core"),
    _s("bad_URIs_rcvd", "core"),
    _s("unsupported_methods", "core"),
    _s("rcv_keepalives", "core", "(tcp keepalive counters)", "transport"),
    _s("drop_oversize_messages", "core", "(drops above max message size)", "transport"),
    _s("drop_send_errors", "core", "(send failures)", "transport"),
    _s("nat_keepalives", "nathelper", "(nat_keepalive OPTIONS / CRLF sent)"),
    _s("router_errors", "core", "(routing service failures)", "kind"),
    _s("tcp_current_opened_connections", "tcp", "current_opened_connections", "transport"),
    _s("tcp_established", "tcp", "established", "transport,direction"),
    _s("tcp_connect_failed", "tcp", "connect_failed", "transport"),
    _s("tcp_local_reject", "tcp", "local_reject", "transport"),
    _s("tcp_con_timeout", "tcp", "con_timeout", "transport"),
    _s("tcp_read_timeout", "tcp", "(read timeout)", "transport"),
    _s("tcp_con_reset", "tcp", "con_reset", "transport"),
    _s("tls_opened_connections", "tls", "opened_connections"),
    _s("ws_current_connections", "websocket", "ws_current_connections"),
    # tm / tmx / sl
    _s("active_transactions", "tmx", "active_transactions (tm inuse_transactions)"),
    _s("transactions", "tmx", "2xx_transactions ... 6xx_transactions", "class_"),
    _s("UAS_transactions", "tmx"),
    _s("UAC_transactions", "tmx"),
    _s("sl_replies", "sl", "1xx_replies ... 6xx_replies, sent_replies", "code"),
    # dialog (the edge's record-routed INVITE dialogs)
    _s("active_dialogs", "dialog"),
    _s("early_dialogs", "dialog"),
    _s("processed_dialogs", "dialog"),
    _s("failed_dialogs", "dialog"),
    _s("expired_dialogs", "dialog"),
    # pike / anti-flood
    _s("antiflood_bans", "pike", "(pike blocked sources; htable ipban entries)"),
    _s("antiflood_dropped", "pike", "(requests dropped from banned sources)"),
    # registrar / usrloc / auth
    _s("accepted_regs", "registrar"),
    _s("rejected_regs", "registrar", "rejected_regs", "code"),
    _s("max_expires", "registrar"),
    _s("min_expires", "registrar"),
    _s("default_expires", "registrar"),
    _s("max_contacts", "registrar"),
    _s("registered_users", "usrloc"),
    _s("registered_contacts", "usrloc", "location-contacts"),
    _s("expired_contacts", "usrloc", "location-expires"),
    _s("location_changes", "usrloc", "(contacts added/refreshed/removed)", "kind"),
    _s("location_db_writes", "usrloc", "(db_mode writes)"),
    _s("auth_challenges", "auth", "(www/proxy challenges sent)"),
    _s("auth_successes", "auth", "(auth_check successes)"),
    _s("auth_failures", "auth", "(auth_check failures)", "reason"),
    _s("auth_lockouts", "auth", "(failed-auth bans)", "kind"),
    # router (KEMI script) and DNS
    _s("router_decisions", "router", "(script actions)", "kind,action"),
    _s("router_script_errors", "router", "(script errors)", "reason"),
    _s("router_reloads", "router", "(cfg reloads)", "result"),
    _s("router_script_loaded_timestamp_seconds", "router", "(kemi reload time)"),
    _s("dns_queries", "dns", "(dns queries)", "type"),
    _s("dns_cache_lookups", "dns", "(dns cache hits/misses)", "result"),
    _s("failed_dns_request", "dns", "failed_dns_request"),
    # presence, msilo, accounting, media relay
    _s("presence_requests", "presence", "(PUBLISH/SUBSCRIBE handled)", "method,code"),
    _s("presence_active_watchers", "presence", "active_watchers"),
    _s("stored_messages", "msilo"),
    _s("dumped_messages", "msilo"),
    _s("failed_messages", "msilo"),
    _s("acc_events", "acc", "(events consumed)", "kind"),
    _s("acc_records", "acc", "(acc/missed_calls/cdrs rows)", "table"),
    _s("acc_db_errors", "acc", "(database errors)"),
    _s("acc_cdrs_timed_out", "acc", "(cdrs closed by dialog timeout)"),
    _s("acc_db_down", "acc", "(database unreachable)"),
    _s("edge_media_ops", "rtpengine", "(rtpengine_offer/answer/delete by the edge)", "op,outcome"),
    _s("media_relay_sessions", "rtpengine", "(sessions)"),
    _s("media_relay_free_port_pairs", "rtpengine", "(free ports)"),
    _s("media_relay_packets", "rtpengine", "(packets)"),
    _s("media_relay_bytes", "rtpengine", "(bytes)"),
    _s("media_relay_errors", "rtpengine", "(errors)"),
    _s("media_relay_sessions_created", "rtpengine", "(sessions created)"),
    _s("media_relay_timeouts", "rtpengine", "(media timeouts)"),
    _s("media_relay_exhausted", "rtpengine", "(port exhaustion)"),
    _s("media_relay_ng_requests", "rtpengine", "(ng commands)", "command"),
    _s("media_relay_ng_errors", "rtpengine", "(ng errors)"),
    # shared store, bus, capture, process
    _s("store_operation_seconds", "sipmesh", "(shared-store latency)", "store,operation"),
    _s("hep_packets", "siptrace", "(HEP packets sent / dropped)", "result"),
    _s("instance_info", "sipmesh", "(process identity)", "instance_id,service,target,version"),
)

_BY_NAME = {stat.name: stat for stat in KAMAILIO_STATS}


def kamailio_name(metric: str) -> str:
    """``sipmesh_accepted_regs_total`` → ``registrar:accepted_regs`` ("" if unknown)."""
    name = metric.removeprefix(PREFIX)
    for suffix in ("_total", "_created", "_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in _BY_NAME:
            name = name.removesuffix(suffix)
            break
    stat = _BY_NAME.get(name)
    return f"{stat.group}:{stat.kamailio}" if stat is not None else ""


def counter(
    registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()
) -> Counter:
    """``sipmesh_<name>`` (exposed as ``sipmesh_<name>_total``)."""
    return Counter(PREFIX + name, doc, list(labels), registry=registry)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return Gauge(PREFIX + name, doc, list(labels), registry=registry)


def histogram(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    labels: Sequence[str] = (),
    buckets: Sequence[float] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
) -> Histogram:
    return Histogram(PREFIX + name, doc, list(labels), registry=registry, buckets=list(buckets))


class Children:
    """The labelled children of one metric family, looked up once per label set.

    ``family.labels(...)`` costs ~1 µs (argument checks, a lock, a tuple key); the
    edge counts every message in several families, so the hot path keeps the
    children it has seen. Bounded: past ``limit`` label sets (labels from the wire,
    e.g. reply codes) it stops remembering new ones and asks the family each time.
    """

    def __init__(self, family: Counter, limit: int = 256) -> None:
        self._family = family
        self._seen: dict[tuple[str, ...], Counter] = {}
        self._limit = limit

    def __call__(self, *labels: str) -> Counter:
        child = self._seen.get(labels)
        if child is None:
            child = self._family.labels(*labels)
            if len(self._seen) < self._limit:
                self._seen[labels] = child
        return child


def shared(registry: CollectorRegistry, name: str) -> object | None:
    """The collector already registered as ``sipmesh_<name>`` in this registry, if any.

    Several services in one process share the registry; the first one creates a
    shared family (store latency), the others reuse it. prometheus_client has no
    public lookup, hence the registry's own table.
    """
    table = getattr(registry, "_names_to_collectors", {})
    return table.get(PREFIX + name) if isinstance(table, dict) else None


def register_instance_info(
    registry: CollectorRegistry,
    *,
    instance_id: str,
    service: str,
    targets: Sequence[str],
    version: str,
) -> Gauge:
    """``sipmesh_instance_info{instance_id,service,target,version} 1``."""
    info = Gauge(
        PREFIX + "instance_info",
        "the sipmesh process behind this endpoint (join on instance)",
        ["instance_id", "service", "target", "version"],
        registry=registry,
    )
    info.labels(instance_id, service, ",".join(targets), version).set(1)
    return info
