"""The batched stream RPCs of proto/sipmesh/v1, described once for both ends."""

from __future__ import annotations

from typing import Any

import grpc

from sipmesh.clients.backend import StreamSpec
from sipmesh.gen.sipmesh.v1 import (
    common_pb2,
    edge_pb2,
    edge_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    registrar_pb2,
    registrar_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)

RouterStreamSpec = StreamSpec[
    router_pb2.RouteItem, router_pb2.DecisionItem, router_pb2.RouteBatch, router_pb2.DecisionBatch
]
RegistrarStreamSpec = StreamSpec[
    registrar_pb2.RegistrarItem,
    registrar_pb2.RegistrarReplyItem,
    registrar_pb2.RegistrarBatch,
    registrar_pb2.RegistrarReplyBatch,
]
PresenceStreamSpec = StreamSpec[
    presence_pb2.PresenceItem,
    presence_pb2.PresenceReplyItem,
    presence_pb2.PresenceBatch,
    presence_pb2.PresenceReplyBatch,
]
EdgeStreamSpec = StreamSpec[
    edge_pb2.SendItem, edge_pb2.SendResultItem, edge_pb2.SendBatch, edge_pb2.SendResultBatch
]


def _open_router(channel: grpc.aio.Channel) -> Any:
    return router_pb2_grpc.RouterStub(channel).Route()


def _open_registrar(channel: grpc.aio.Channel) -> Any:
    return registrar_pb2_grpc.RegistrarStub(channel).Call()


def _open_presence(channel: grpc.aio.Channel) -> Any:
    return presence_pb2_grpc.PresenceStub(channel).Handle()


def _open_edge(channel: grpc.aio.Channel) -> Any:
    return edge_pb2_grpc.EdgeStub(channel).Send()


def _router_error(cid: int, error: common_pb2.CallError) -> router_pb2.DecisionItem:
    return router_pb2.DecisionItem(id=cid, error=error)


def _registrar_error(cid: int, error: common_pb2.CallError) -> registrar_pb2.RegistrarReplyItem:
    return registrar_pb2.RegistrarReplyItem(id=cid, error=error)


def _presence_error(cid: int, error: common_pb2.CallError) -> presence_pb2.PresenceReplyItem:
    return presence_pb2.PresenceReplyItem(id=cid, error=error)


def _edge_error(cid: int, error: common_pb2.CallError) -> edge_pb2.SendResultItem:
    return edge_pb2.SendResultItem(id=cid, error=error)


ROUTER_STREAM: RouterStreamSpec = StreamSpec(
    name="sipmesh.v1.Router/Route",
    open=_open_router,
    request_batch=lambda items: router_pb2.RouteBatch(items=items),
    request_items=lambda batch: batch.items,
    reply_batch=lambda items: router_pb2.DecisionBatch(items=items),
    reply_items=lambda batch: batch.items,
    reply_error=_router_error,
)

REGISTRAR_STREAM: RegistrarStreamSpec = StreamSpec(
    name="sipmesh.v1.Registrar/Call",
    open=_open_registrar,
    request_batch=lambda items: registrar_pb2.RegistrarBatch(items=items),
    request_items=lambda batch: batch.items,
    reply_batch=lambda items: registrar_pb2.RegistrarReplyBatch(items=items),
    reply_items=lambda batch: batch.items,
    reply_error=_registrar_error,
)

PRESENCE_STREAM: PresenceStreamSpec = StreamSpec(
    name="sipmesh.v1.Presence/Handle",
    open=_open_presence,
    request_batch=lambda items: presence_pb2.PresenceBatch(items=items),
    request_items=lambda batch: batch.items,
    reply_batch=lambda items: presence_pb2.PresenceReplyBatch(items=items),
    reply_items=lambda batch: batch.items,
    reply_error=_presence_error,
)

EDGE_STREAM: EdgeStreamSpec = StreamSpec(
    name="sipmesh.v1.Edge/Send",
    open=_open_edge,
    request_batch=lambda items: edge_pb2.SendBatch(items=items),
    request_items=lambda batch: batch.items,
    reply_batch=lambda items: edge_pb2.SendResultBatch(items=items),
    reply_items=lambda batch: batch.items,
    reply_error=_edge_error,
)
