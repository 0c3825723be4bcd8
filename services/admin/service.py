"""The admin service: every operation of `sipmesh.clients.admin_api.AdminApi`.

One object serves the gRPC API (add_admin_servicer), the REST API and the web
console (rest.py), and `sipmesh ctl` in process. The operations are grouped by
what they touch: subscribers.py and tables.py/routing.py (Kamailio's tables),
live.py (location through the registrar, bans, cfg, statistics, reloads,
instances), records.py (acc and CDRs).
"""

from __future__ import annotations

from sipmesh.admin.live import LiveOps
from sipmesh.admin.records import RecordOps
from sipmesh.admin.routing import RoutingTableOps
from sipmesh.admin.subscribers import SubscriberOps
from sipmesh.admin.tables import TableOps


class AdminService(SubscriberOps, TableOps, RoutingTableOps, LiveOps, RecordOps):
    """Implements AdminApi; constructed with its dependencies (see AdminBase)."""
