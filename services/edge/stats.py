"""Edge statistics with Kamailio's names (core, tm/tmx and dialog module counters).

Kamailio's `kamctl stats` shows core:rcv_requests, core:fwd_requests, tm:2xx_transactions
and so on; operators grep for those names, so sipmesh keeps them, prefixed ``sipmesh_``
and registered on the runtime's own registry (never the global one). Per-method and
per-class variants are labels of one metric family instead of separate names, which is
what Prometheus queries expect (``sipmesh_rcv_requests_total{method="INVITE"}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipmesh.observe.stats import Children

from .dialogs import DialogCounts

if TYPE_CHECKING:
    from sipmesh.sip.transaction import TransactionLayer

# Methods counted under their own label (Kamailio's rcv_requests_<method>); any other
# method is counted as "other" so that a scanner cannot grow the label set.
_METHODS = frozenset(
    {
        "INVITE",
        "CANCEL",
        "ACK",
        "BYE",
        "INFO",
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "OPTIONS",
        "PRACK",
        "UPDATE",
        "REFER",
        "PUBLISH",
    }
)


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


class EdgeStats:
    """The counters of one edge instance. Methods are cheap enough for the hot path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "sipmesh_"
        self.rcv_requests = Counter(
            p + "rcv_requests", "requests received (core:rcv_requests)", ["method"],
            registry=registry,
        )  # fmt: skip
        self.fwd_requests = Counter(
            p + "fwd_requests", "requests forwarded (core:fwd_requests)", registry=registry
        )
        self.drop_requests = Counter(
            p + "drop_requests",
            "requests dropped (core:drop_requests)",
            ["reason"],
            registry=registry,
        )
        self.err_requests = Counter(
            p + "err_requests", "malformed requests (core:err_requests)", registry=registry
        )
        self.rcv_replies = Counter(
            p + "rcv_replies", "replies received (core:rcv_replies)", ["class_"],
            registry=registry,
        )  # fmt: skip
        self.fwd_replies = Counter(
            p + "fwd_replies", "replies forwarded (core:fwd_replies)", registry=registry
        )
        self.drop_replies = Counter(
            p + "drop_replies", "replies dropped (core:drop_replies)", registry=registry
        )
        self.bad_uris_rcvd = Counter(
            p + "bad_URIs_rcvd", "requests with an unusable URI (core:bad_URIs_rcvd)",
            registry=registry,
        )  # fmt: skip
        self.unsupported_methods = Counter(
            p + "unsupported_methods", "requests with an unknown method (core:unsupported_methods)",
            registry=registry,
        )  # fmt: skip
        self.active_transactions = Gauge(
            p + "active_transactions",
            "proxied transactions in progress (tm:inuse_transactions)",
            registry=registry,
        )
        self.transactions = Counter(
            p + "transactions",
            "finished transactions by final class (tm:2xx_transactions ... 6xx_transactions)",
            ["class_"],
            registry=registry,
        )
        self.sl_replies = Counter(
            p + "sl_replies", "replies sent by the edge itself (sl:sent_replies)", ["code"],
            registry=registry,
        )  # fmt: skip
        self.bans = Counter(
            p + "antiflood_bans", "sources banned by the anti-flood check", registry=registry
        )
        self.banned_drops = Counter(
            p + "antiflood_dropped", "messages dropped because their source is banned",
            registry=registry,
        )  # fmt: skip
        self.router_errors = Counter(
            p + "router_errors", "routing calls that failed or timed out", ["kind"],
            registry=registry,
        )  # fmt: skip
        self.keepalives = Counter(p + "nat_keepalives", "NAT keep-alives sent", registry=registry)
        # Read at scrape time (_ScrapeTime): the transaction layer's server count, the
        # client transactions of requests the edge originates (Outbound, the BYE of a
        # refused callee) and the dialog tracker's counts (services/edge/dialogs.py).
        self.layer: TransactionLayer | None = None
        self.uac_started = 0
        self.dialogs = DialogCounts()
        registry.register(_ScrapeTime(self))

        # Per-message counters: their children, looked up once (observe.stats.Children).
        self._rcv_requests = Children(self.rcv_requests)
        self._rcv_replies = Children(self.rcv_replies)
        self._drop_requests = Children(self.drop_requests)
        self._sl_replies = Children(self.sl_replies)
        self._transactions = Children(self.transactions)

    def request_received(self, method: str) -> None:
        self._rcv_requests(method_label(method)).inc()

    def reply_received(self, status: int) -> None:
        self._rcv_replies(f"{status // 100}xx").inc()

    def dropped(self, reason: str) -> None:
        self._drop_requests(reason).inc()

    def replied(self, status: int) -> None:
        self._sl_replies(str(status)).inc()

    def transaction_finished(self, status: int) -> None:
        if 200 <= status <= 699:
            self._transactions(f"{status // 100}xx").inc()


class _ScrapeTime(Collector):
    """Statistics kept as plain integers on the hot path, turned into metrics only when
    /metrics is scraped: tmx's UAS/UAC transaction counts and the dialog module's."""

    def __init__(self, stats: EdgeStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        p = "sipmesh_"
        uas = s.layer.servers_started if s.layer is not None else 0
        yield CounterMetricFamily(
            p + "UAS_transactions", "server transactions created (tmx:UAS_transactions)", uas
        )
        yield CounterMetricFamily(
            p + "UAC_transactions",
            "client transactions of requests this edge sent itself (tmx:UAC_transactions)",
            s.uac_started,
        )
        d = s.dialogs
        yield GaugeMetricFamily(
            p + "active_dialogs", "confirmed dialogs not yet ended (dialog:active_dialogs)",
            d.active,
        )  # fmt: skip
        yield GaugeMetricFamily(
            p + "early_dialogs", "dialogs in early state (dialog:early_dialogs)", d.early
        )
        yield CounterMetricFamily(
            p + "processed_dialogs", "dialogs answered (dialog:processed_dialogs)", d.processed
        )
        yield CounterMetricFamily(
            p + "failed_dialogs", "INVITEs with a non-2xx final (dialog:failed_dialogs)", d.failed
        )
        yield CounterMetricFamily(
            p + "expired_dialogs", "dialogs without a BYE before the dialog timeout "
            "(dialog:expired_dialogs)", d.expired,
        )  # fmt: skip
