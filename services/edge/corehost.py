"""What the proxy core's mixins (forking.py, callbacks.py, proxymedia.py, cancels.py)
use of the core: their methods are typed ``self: CoreHost`` (mypy's mixin pattern), and
ProxyCore, which inherits them, provides all of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import Request, Response
from sipmesh.sip.transaction import TransactionLayer

from .branches import Branch, ProxyTransaction
from .dialogs import DialogEvents
from .flowtoken import FlowTokens
from .media import MediaFailure, MediaManager, ReplyOp
from .stateless import StatelessForwarder
from .stats import EdgeStats
from .txdriver import TxDriver

if TYPE_CHECKING:
    from .proxycore import CoreSettings

__all__ = ["CoreHost"]


class CoreHost(Protocol):
    _driver: TxDriver
    _layer: TransactionLayer
    _loop: asyncio.AbstractEventLoop
    _sl: StatelessForwarder
    _stats: EdgeStats
    _media: MediaManager
    _dropped: dict[str, asyncio.TimerHandle]
    _cfg: CoreSettings
    _tokens: FlowTokens | None
    _local: Callable[[str, str], tuple[str, int]]
    _dialogs: DialogEvents | None
    _clients: dict[str, tuple[ProxyTransaction, Branch]]
    transactions: dict[str, ProxyTransaction]

    # proxycore.py
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    async def _call_router(
        self, req: router_pb2.RouteRequest, *, retry: bool = False
    ) -> router_pb2.Decision: ...
    def _remember(self, ptx: ProxyTransaction, decision: router_pb2.Decision) -> None: ...
    def _edited_request(self, ptx: ProxyTransaction, decision: router_pb2.Decision) -> Request: ...
    def _reply(self, ptx: ProxyTransaction, reply: router_pb2.Reply) -> None: ...
    def _handle_response(
        self, ptx: ProxyTransaction, branch: Branch, response: Response
    ) -> None: ...
    def _branch_timeout(self, ptx: ProxyTransaction, branch: Branch) -> None: ...
    def _check_done(self, ptx: ProxyTransaction) -> None: ...
    def _send_best(self, ptx: ProxyTransaction) -> None: ...
    def _final_local(
        self,
        ptx: ProxyTransaction,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None: ...

    # forking.py
    def _relay(self, ptx: ProxyTransaction, relay: router_pb2.Relay) -> None: ...
    def _start_group(
        self, ptx: ProxyTransaction, targets: list[router_pb2.Target | None]
    ) -> None: ...
    def _branch_request(
        self, ptx: ProxyTransaction, target: router_pb2.Target | None
    ) -> Request: ...
    def _send_branch(
        self,
        ptx: ProxyTransaction,
        target: router_pb2.Target | None,
        request: Request,
        via_branch: str | None = None,
        extra_rr_params: str = "",
    ) -> None: ...

    # callbacks.py
    async def _branch_routes(
        self, ptx: ProxyTransaction, targets: list[router_pb2.Target | None]
    ) -> None: ...
    async def _branch_route(
        self,
        ptx: ProxyTransaction,
        index: int,
        target: router_pb2.Target | None,
        request: Request,
        via_branch: str,
    ) -> str | tuple[int, str]: ...
    async def _reply_decision(
        self, ptx: ProxyTransaction, branch: Branch, response: Response
    ) -> router_pb2.Decision: ...

    # proxymedia.py
    async def _media_request(
        self,
        ptx: ProxyTransaction,
        request: Request,
        decision: router_pb2.Decision,
        index: int,
        via_branch: str,
    ) -> None: ...
    def _media_failed(self, ptx: ProxyTransaction, exc: MediaFailure) -> None: ...
    def _media_cleanup(self, ptx: ProxyTransaction) -> None: ...
    async def _reply_media(
        self, ptx: ProxyTransaction, branch: Branch, response: Response, op: ReplyOp, via: str
    ) -> bool: ...
    def _refuse_2xx(
        self, ptx: ProxyTransaction, branch: Branch, response: Response, exc: MediaFailure
    ) -> None: ...

    # cancels.py
    def _end_dropped(self, tx_id: str) -> None: ...
    def _cancel_dropped(self, tx_id: str) -> None: ...
    def _cancel_others(self, ptx: ProxyTransaction, winner: Branch) -> None: ...
    def _cancel_branch(self, ptx: ProxyTransaction, branch: Branch) -> None: ...
