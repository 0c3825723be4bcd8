"""The admin API (sipmesh.v1.Admin) as a typed Protocol and its gRPC client.

The admin service implements `AdminApi` and is served with
`grpc_servers.add_admin_servicer`; `sipmesh ctl` and the REST layer call it through
`GrpcAdminClient` (or in-process through the service object itself). Method names are
the RPC names in snake_case; tests/clients/test_admin_api.py checks that this file
covers every RPC of proto/sipmesh/v1/admin.proto with the right message types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from sipmesh.clients.admin_auth import bearer_metadata
from sipmesh.clients.backend import StreamOptions
from sipmesh.clients.grpc_clients import unary_call, unary_channel
from sipmesh.gen.sipmesh.v1 import admin_pb2, admin_pb2_grpc

Reply = TypeVar("Reply")


class AdminApi(Protocol):
    """Every operation of the admin API (issue 11, item 1)."""

    async def subscriber_add(
        self, request: admin_pb2.SubscriberAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber: ...

    async def subscriber_passwd(
        self, request: admin_pb2.SubscriberPasswdRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def subscriber_remove(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def subscriber_show(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber: ...

    async def subscriber_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SubscriberListReply: ...

    async def location_show(
        self, request: admin_pb2.LocationShowRequest, *, timeout: float | None = None
    ) -> admin_pb2.LocationShowReply: ...

    async def location_remove(
        self, request: admin_pb2.LocationRemoveRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def location_add(
        self, request: admin_pb2.LocationAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def alias_add(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def alias_remove(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def alias_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AliasListReply: ...

    async def speed_dial_add(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def speed_dial_remove(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def speed_dial_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SpeedDialListReply: ...

    async def domain_add(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def domain_remove(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def domain_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DomainListReply: ...

    async def address_add(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def address_remove(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def address_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AddressListReply: ...

    async def dispatcher_list(
        self, request: admin_pb2.DispatcherListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DispatcherListReply: ...

    async def dispatcher_add(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def dispatcher_remove(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def dispatcher_set_state(
        self, request: admin_pb2.DispatcherSetStateRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def dispatcher_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply: ...

    async def lcr_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.LcrTables: ...

    async def lcr_gateway_add(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_gateway_remove(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_rule_add(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_rule_remove(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_rule_target_add(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_rule_target_remove(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def lcr_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply: ...

    async def dialplan_add(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def dialplan_remove(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def dialplan_list(
        self, request: admin_pb2.DialplanListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanListReply: ...

    async def dialplan_translate(
        self, request: admin_pb2.DialplanTranslateRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanTranslateReply: ...

    async def dialplan_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply: ...

    async def ban_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.BanListReply: ...

    async def ban_add(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def ban_remove(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def cfg_get(
        self, request: admin_pb2.CfgGetRequest, *, timeout: float | None = None
    ) -> admin_pb2.CfgValues: ...

    async def cfg_set(
        self, request: admin_pb2.CfgValue, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply: ...

    async def stats(
        self, request: admin_pb2.StatsRequest, *, timeout: float | None = None
    ) -> admin_pb2.StatsReply: ...

    async def acc_query(
        self, request: admin_pb2.AccQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.AccRecords: ...

    async def cdr_query(
        self, request: admin_pb2.CdrQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.CdrRecords: ...

    async def reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply: ...

    async def versions(
        self, request: admin_pb2.VersionsRequest, *, timeout: float | None = None
    ) -> admin_pb2.VersionsReply: ...

    async def instances(
        self, request: admin_pb2.InstancesRequest, *, timeout: float | None = None
    ) -> admin_pb2.InstancesReply: ...

    async def ping(
        self, request: admin_pb2.PingAdminRequest, *, timeout: float | None = None
    ) -> admin_pb2.PongAdminReply: ...


class GrpcAdminClient:
    """AdminApi over gRPC (unary calls, round-robin over the admin instances), each
    carrying `token` as ``authorization: Bearer`` metadata (admin_auth.py)."""

    def __init__(
        self, target: str, options: StreamOptions | None = None, *, token: str = ""
    ) -> None:
        self._options = options or StreamOptions()
        self._target = target
        # Sent with every call (admin_auth.py); the admin service refuses calls without.
        self._metadata = bearer_metadata(token)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def start(self) -> None:
        self._channel = unary_channel(self._target, self._options)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> GrpcAdminClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        request: object,
        reply_type: type[Reply],
        timeout: float | None,
    ) -> Reply:
        wait = self._options.default_timeout if timeout is None else timeout
        return await unary_call(method, request, reply_type, wait, self._metadata)

    async def subscriber_add(
        self, request: admin_pb2.SubscriberAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber:
        return await self._call(self._stub.SubscriberAdd, request, admin_pb2.Subscriber, timeout)

    async def subscriber_passwd(
        self, request: admin_pb2.SubscriberPasswdRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.SubscriberPasswd, request, admin_pb2.WriteReply, timeout)

    async def subscriber_remove(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.SubscriberRemove, request, admin_pb2.WriteReply, timeout)

    async def subscriber_show(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber:
        return await self._call(self._stub.SubscriberShow, request, admin_pb2.Subscriber, timeout)

    async def subscriber_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SubscriberListReply:
        return await self._call(
            self._stub.SubscriberList, request, admin_pb2.SubscriberListReply, timeout
        )

    async def location_show(
        self, request: admin_pb2.LocationShowRequest, *, timeout: float | None = None
    ) -> admin_pb2.LocationShowReply:
        return await self._call(
            self._stub.LocationShow, request, admin_pb2.LocationShowReply, timeout
        )

    async def location_remove(
        self, request: admin_pb2.LocationRemoveRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LocationRemove, request, admin_pb2.WriteReply, timeout)

    async def location_add(
        self, request: admin_pb2.LocationAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LocationAdd, request, admin_pb2.WriteReply, timeout)

    async def alias_add(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.AliasAdd, request, admin_pb2.WriteReply, timeout)

    async def alias_remove(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.AliasRemove, request, admin_pb2.WriteReply, timeout)

    async def alias_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AliasListReply:
        return await self._call(self._stub.AliasList, request, admin_pb2.AliasListReply, timeout)

    async def speed_dial_add(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.SpeedDialAdd, request, admin_pb2.WriteReply, timeout)

    async def speed_dial_remove(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.SpeedDialRemove, request, admin_pb2.WriteReply, timeout)

    async def speed_dial_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SpeedDialListReply:
        return await self._call(
            self._stub.SpeedDialList, request, admin_pb2.SpeedDialListReply, timeout
        )

    async def domain_add(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DomainAdd, request, admin_pb2.WriteReply, timeout)

    async def domain_remove(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DomainRemove, request, admin_pb2.WriteReply, timeout)

    async def domain_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DomainListReply:
        return await self._call(self._stub.DomainList, request, admin_pb2.DomainListReply, timeout)

    async def address_add(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.AddressAdd, request, admin_pb2.WriteReply, timeout)

    async def address_remove(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.AddressRemove, request, admin_pb2.WriteReply, timeout)

    async def address_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AddressListReply:
        return await self._call(
            self._stub.AddressList, request, admin_pb2.AddressListReply, timeout
        )

    async def dispatcher_list(
        self, request: admin_pb2.DispatcherListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DispatcherListReply:
        return await self._call(
            self._stub.DispatcherList, request, admin_pb2.DispatcherListReply, timeout
        )

    async def dispatcher_add(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DispatcherAdd, request, admin_pb2.WriteReply, timeout)

    async def dispatcher_remove(
        self, request: admin_pb2.DispatcherDestination, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DispatcherRemove, request, admin_pb2.WriteReply, timeout)

    async def dispatcher_set_state(
        self, request: admin_pb2.DispatcherSetStateRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(
            self._stub.DispatcherSetState, request, admin_pb2.WriteReply, timeout
        )

    async def dispatcher_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._call(
            self._stub.DispatcherReload, request, admin_pb2.ReloadReply, timeout
        )

    async def lcr_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.LcrTables:
        return await self._call(self._stub.LcrList, request, admin_pb2.LcrTables, timeout)

    async def lcr_gateway_add(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LcrGatewayAdd, request, admin_pb2.WriteReply, timeout)

    async def lcr_gateway_remove(
        self, request: admin_pb2.LcrGateway, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LcrGatewayRemove, request, admin_pb2.WriteReply, timeout)

    async def lcr_rule_add(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LcrRuleAdd, request, admin_pb2.WriteReply, timeout)

    async def lcr_rule_remove(
        self, request: admin_pb2.LcrRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LcrRuleRemove, request, admin_pb2.WriteReply, timeout)

    async def lcr_rule_target_add(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.LcrRuleTargetAdd, request, admin_pb2.WriteReply, timeout)

    async def lcr_rule_target_remove(
        self, request: admin_pb2.LcrRuleTarget, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(
            self._stub.LcrRuleTargetRemove, request, admin_pb2.WriteReply, timeout
        )

    async def lcr_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._call(self._stub.LcrReload, request, admin_pb2.ReloadReply, timeout)

    async def dialplan_add(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DialplanAdd, request, admin_pb2.WriteReply, timeout)

    async def dialplan_remove(
        self, request: admin_pb2.DialplanRule, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.DialplanRemove, request, admin_pb2.WriteReply, timeout)

    async def dialplan_list(
        self, request: admin_pb2.DialplanListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanListReply:
        return await self._call(
            self._stub.DialplanList, request, admin_pb2.DialplanListReply, timeout
        )

    async def dialplan_translate(
        self, request: admin_pb2.DialplanTranslateRequest, *, timeout: float | None = None
    ) -> admin_pb2.DialplanTranslateReply:
        return await self._call(
            self._stub.DialplanTranslate, request, admin_pb2.DialplanTranslateReply, timeout
        )

    async def dialplan_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._call(self._stub.DialplanReload, request, admin_pb2.ReloadReply, timeout)

    async def ban_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.BanListReply:
        return await self._call(self._stub.BanList, request, admin_pb2.BanListReply, timeout)

    async def ban_add(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.BanAdd, request, admin_pb2.WriteReply, timeout)

    async def ban_remove(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.BanRemove, request, admin_pb2.WriteReply, timeout)

    async def cfg_get(
        self, request: admin_pb2.CfgGetRequest, *, timeout: float | None = None
    ) -> admin_pb2.CfgValues:
        return await self._call(self._stub.CfgGet, request, admin_pb2.CfgValues, timeout)

    async def cfg_set(
        self, request: admin_pb2.CfgValue, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        return await self._call(self._stub.CfgSet, request, admin_pb2.WriteReply, timeout)

    async def stats(
        self, request: admin_pb2.StatsRequest, *, timeout: float | None = None
    ) -> admin_pb2.StatsReply:
        return await self._call(self._stub.Stats, request, admin_pb2.StatsReply, timeout)

    async def acc_query(
        self, request: admin_pb2.AccQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.AccRecords:
        return await self._call(self._stub.AccQuery, request, admin_pb2.AccRecords, timeout)

    async def cdr_query(
        self, request: admin_pb2.CdrQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.CdrRecords:
        return await self._call(self._stub.CdrQuery, request, admin_pb2.CdrRecords, timeout)

    async def reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._call(self._stub.Reload, request, admin_pb2.ReloadReply, timeout)

    async def versions(
        self, request: admin_pb2.VersionsRequest, *, timeout: float | None = None
    ) -> admin_pb2.VersionsReply:
        return await self._call(self._stub.Versions, request, admin_pb2.VersionsReply, timeout)

    async def instances(
        self, request: admin_pb2.InstancesRequest, *, timeout: float | None = None
    ) -> admin_pb2.InstancesReply:
        return await self._call(self._stub.Instances, request, admin_pb2.InstancesReply, timeout)

    async def ping(
        self, request: admin_pb2.PingAdminRequest, *, timeout: float | None = None
    ) -> admin_pb2.PongAdminReply:
        return await self._call(self._stub.Ping, request, admin_pb2.PongAdminReply, timeout)
