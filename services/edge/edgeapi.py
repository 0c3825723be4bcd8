"""What the edge does for others: the EdgeClient contract and NAT keep-alives.

Another edge or a service hands this edge a request for a flow it owns (``send``,
RFC 5626 §5.3: only the edge holding a connection can use it), asks what it listens
on (``info``); the edge in turn hands a request for a flow it does not own to the
edge that does (``_handover``), and keeps the NAT bindings of the REGISTERs it
received open (``send_keepalive``). A base class of ``EdgeService``, which sets the
attributes declared here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipmesh.clients.interfaces import EdgeClient
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.sip.transaction import Address

from . import forward as fw
from .nat import KeepAliveTable, keepalive_options
from .outbound import Outbound
from .proxycore import ProxyCore
from .stats import EdgeStats
from .txdriver import HANDOVER, TxDriver

__all__ = ["EdgeApi"]


class EdgeApi:
    """EdgeClient's side of the edge, and the keep-alives of the NAT bindings it owns."""

    config: SipmeshConfig
    edge_id: str
    started_at: float
    driver: TxDriver | None
    core: ProxyCore | None
    outbound: Outbound | None
    keepalives: KeepAliveTable
    stats: EdgeStats
    _peers: EdgeClient | None
    _clock: Callable[[], float]
    _tasks: set[asyncio.Task[None]]

    def local_address(self, transport: str, family: str) -> tuple[str, int]:
        raise NotImplementedError

    def _listener_infos(self) -> list[edge_pb2.EdgeInfo.Listener]:
        raise NotImplementedError

    async def _keepalive_loop(self) -> None:
        interval = self.config.edge.nat_keepalive_interval
        while True:
            await asyncio.sleep(min(1.0, interval))
            for target in self.keepalives.due(self._clock()):
                self.send_keepalive(target.uri, target.transport, target.host, target.port,
                                    target.flow_id)  # fmt: skip

    def send_keepalive(
        self, uri: str, transport: str, host: str, port: int, flow_id: str | None
    ) -> None:
        assert self.driver is not None
        dest = Address(transport.upper(), host, port, flow_id)
        if self.config.edge.nat_keepalive == "crlf":
            data = b"\r\n\r\n"  # RFC 5626 §3.5.1 double-CRLF ping
        else:
            family = "6" if ":" in host else "4"
            via_host, via_port = self.local_address(transport.lower(), family)
            data = keepalive_options(uri, via_host, via_port, transport)
        self.stats.keepalives.inc()
        self.driver.transmit(data, dest)

    # -- handover to the edge owning a flow (Edge.Send) --------------------------------------

    def _handover(self, data: bytes, dest: Address) -> bool:
        assert dest.flow is not None
        edge_id, _, flow_id = dest.flow[len(HANDOVER) :].partition("|")
        peer = self._peers
        if peer is None:
            return False
        request = common_pb2.OutboundRequest(
            kind=common_pb2.OutboundRequest.KIND_REQUEST,
            raw=data,
            edge_id=edge_id,
            flow_id=flow_id,
            stateless=True,
            destination=common_pb2.Address(
                transport=fw.transport_enum(dest.transport), host=dest.host, port=dest.port
            ),
        )

        async def send() -> None:
            try:
                result = await peer.send(request, timeout=self.config.edge.router_timeout)
                ok = result.outcome == edge_pb2.SendResult.OUTCOME_SENT
            except Exception:
                ok = False
            driver = self.driver
            if (
                not ok
                and driver is not None
                and driver.layer.report_unreachable(dest, driver.now())
            ):
                driver.pump()

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def send(
        self,
        request: common_pb2.OutboundRequest,
        *,
        timeout: float | None = None,
    ) -> edge_pb2.SendResult:
        """EdgeClient.send: send a request (or keep-alive) through a flow we own."""
        assert self.outbound is not None
        return await self.outbound.send(request, timeout=timeout)

    async def info(
        self,
        request: edge_pb2.EdgeInfoRequest,
        *,
        timeout: float | None = None,
    ) -> edge_pb2.EdgeInfo:
        listeners = self._listener_infos()
        active = len(self.core.transactions) if self.core is not None else 0
        return edge_pb2.EdgeInfo(
            edge_id=self.edge_id,
            listeners=listeners,
            active_transactions=active,
            started_at=self.started_at,
        )
