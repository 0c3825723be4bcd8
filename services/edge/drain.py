"""Graceful drain of an edge on SIGTERM: calls in progress finish, new ones go elsewhere.

What a rolling restart needs (docs/deployment.md, Upgrades):

- New work is refused: an out-of-dialog request that starts a new transaction gets
  503 Service Unavailable with Retry-After (RFC 3261 §21.5.4), so the UA or the
  load balancer tries another edge; retransmissions of transactions already here,
  ACK and CANCEL are still processed.
- Work in progress continues: transactions run to completion, and so do the dialogs
  this edge Record-Routed — their in-dialog requests (BYE, re-INVITE) come back here,
  so the edge stays up until the last such dialog ended (or the grace period ran out).

Dialogs are tracked by Call-ID from what the proxy core already sees: a 2xx to an
INVITE starts one, the final response to a BYE ends it. The table is bounded (the
oldest entries go first): an entry whose BYE took another path can only make a drain
last its whole grace period, never cut a call short.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from sipmesh.sip import Request, Response
from sipmesh.sip.transaction import TransactionLayer
from sipmesh.sip.transaction.common import server_key

RETRY_AFTER = "5"
MAX_DIALOGS = 100_000
POLL = 0.05


class Drain:
    def __init__(self, max_dialogs: int = MAX_DIALOGS) -> None:
        self._dialogs: OrderedDict[str, None] = OrderedDict()
        self._max = max_dialogs
        self.draining = False
        self.refused = 0

    @property
    def dialogs(self) -> int:
        return len(self._dialogs)

    def on_final(self, request: Request, response: Response) -> None:
        """A final response sent upstream: dialog starts (INVITE 2xx) and ends (BYE)."""
        method = request.method
        if method == "INVITE" and 200 <= response.status < 300:
            self._dialogs[request.call_id] = None
            self._dialogs.move_to_end(request.call_id)
            while len(self._dialogs) > self._max:
                self._dialogs.popitem(last=False)
        elif method == "BYE":
            self._dialogs.pop(request.call_id, None)

    def refuses(self, request: Request, layer: TransactionLayer) -> bool:
        """While draining: whether this request starts new work (to be answered 503)."""
        if not self.draining or request.method in ("ACK", "CANCEL"):
            return False
        if request.to.tag is not None:
            return False  # in-dialog: part of a call in progress
        try:
            known = layer.state(server_key(request)) is not None
        except Exception:
            return False  # let the transaction layer deal with a bad request
        if known:
            return False  # a retransmission of a transaction already in progress
        self.refused += 1
        return True

    async def run(self, active: Callable[[], int], grace: float) -> float:
        """Refuse new work and wait until nothing is in progress; returns seconds left."""
        self.draining = True
        deadline = time.monotonic() + grace
        # Polled: the proxy core's transaction table has no change notification.
        while time.monotonic() < deadline and (active() or self._dialogs):  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        return max(0.0, deadline - time.monotonic())
