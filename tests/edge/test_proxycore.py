"""The proxy core over real UDP sockets on 127.0.0.1, with a scripted router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import Request

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port

PeerFactory = Callable[[], Awaitable[Peer]]


async def test_invite_relayed_with_100_and_final_forwarded(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, record_route=True)

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        trying = await caller.next_response()
        assert trying.status == 100
        invite = await callee.next_request()
        assert invite.method == "INVITE"
        assert invite.uri == f"sip:bob@127.0.0.1:{callee.port}"
        assert len(invite.vias) == 2
        assert invite.max_forwards == 69
        assert invite.record_routes
        assert "lr" in str(invite.record_routes[0])
        callee.send(callee.reply(invite, 180, "Ringing"), port)
        ringing = await caller.next_response()
        assert ringing.status == 180
        assert len(ringing.vias) == 1
        callee.send(callee.reply(invite, 200, "OK"), port)
        ok = await caller.next_response()
        assert ok.status == 200
        assert ok.to.tag == "uas1"
        assert router.kinds() == [router_pb2.ROUTE_KIND_REQUEST]
    finally:
        await edge.stop(0)


async def test_retransmitted_invite_absorbed_and_last_response_repeated(
    udp_peers: PeerFactory,
) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port)

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        text = request_text("INVITE", "sip:bob@sipmesh.test", caller.port, branch="z9hG4bKretx")
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        callee.send(callee.reply(invite, 180, "Ringing"), port)
        assert (await caller.next_response()).status == 180
        caller.send(text, port)  # retransmission
        again = await caller.next_response()
        assert again.status == 180  # the last response, repeated by the transaction
        callee.send(callee.reply(invite, 486, "Busy Here"), port)
        busy = await caller.next_response()
        assert busy.status == 486
        assert len(router.calls) == 1
        # the callee got exactly one INVITE (plus the ACK of its 486)
        ack = await callee.next_request()
        assert ack.method == "ACK"
        assert [
            m for m in callee.pending() if isinstance(m, Request) and m.method == "INVITE"
        ] == []
    finally:
        await edge.stop(0)


async def test_options_to_server_answered_without_router(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()
    router = FakeRouter()
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("OPTIONS", f"sip:127.0.0.1:{port}", caller.port), port)
        ok = await caller.next_response()
        assert ok.status == 200
        assert "INVITE" in (ok.get("Allow") or "")
        assert ok.get("Accept") == "application/sdp"
        assert router.calls == []
    finally:
        await edge.stop(0)


async def test_router_reply_decision(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(reply=router_pb2.Reply(code=404, reason="Not Here"))

    edge = await start_edge(FakeRouter(decide))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        resp = await caller.next_response()
        assert (resp.status, resp.reason) == (404, "Not Here")
        assert resp.to.tag
        # Nothing left to relay: the proxy state is released at once; the server
        # transaction alone stays (timer J) to answer retransmissions.
        assert edge.core is not None
        assert edge.driver is not None
        assert edge.core.transactions == {}
        assert edge.driver.layer.transaction_count == 1
    finally:
        await edge.stop(0)


async def test_router_down_gives_503_with_retry_after(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def hang(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    edge = await start_edge(FakeRouter(hang), router_timeout=0.2)
    try:
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await caller.next_response()).status == 100
        resp = await caller.next_response()
        assert resp.status == 503
        assert resp.get("Retry-After") == "5"
    finally:
        await edge.stop(0)


async def test_router_error_gives_503(udp_peers: PeerFactory) -> None:
    from sipmesh.clients.errors import Unavailable

    caller = await udp_peers()

    async def down(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        raise Unavailable("no router", retry_after=7)

    edge = await start_edge(FakeRouter(down))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        resp = await caller.next_response()
        assert (resp.status, resp.get("Retry-After")) == (503, "7")
    finally:
        await edge.stop(0)


async def test_unanswered_callee_gets_408_after_fr_inv_timer(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, fr_inv_timer_ms=300)

    edge = await start_edge(FakeRouter(decide))
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        callee.send(callee.reply(invite, 180, "Ringing"), port)
        assert (await caller.next_response()).status == 180
        final = await caller.next_response()
        assert final.status == 408
        cancel = await callee.next_request()
        assert cancel.method == "CANCEL"  # §16.8: timer C CANCELs the ringing branch
    finally:
        await edge.stop(0)


async def test_no_response_at_all_gives_408_after_fr_timer(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, fr_timer_ms=300)

    edge = await start_edge(FakeRouter(decide))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await callee.next_request()).method == "MESSAGE"
        assert (await caller.next_response()).status == 408
    finally:
        await edge.stop(0)


async def test_a_silent_branch_is_not_resent_after_fr_timer(udp_peers: PeerFactory) -> None:
    """After fr_timer gives up a branch that never answered, the INVITE is not resent
    (tm stops; §9.1 forbids a CANCEL): a callee coming back later gets no ghost call."""
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, fr_timer_ms=300)

    edge = await start_edge(FakeRouter(decide))
    try:
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await caller.next_response()).status == 100
        assert (await callee.next_request()).method == "INVITE"
        assert (await caller.next_response()).status == 408
        callee.pending()  # the retransmissions sent before the timer fired
        # Timer A would resend at T1 doublings (T1 = 50 ms here) for seconds more.
        await asyncio.sleep(0.6)
        assert callee.pending() == []
    finally:
        await edge.stop(0)


async def test_parallel_forking_best_response(udp_peers: PeerFactory) -> None:
    peers = [await udp_peers() for _ in range(4)]
    caller, forks = peers[0], peers[1:]

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(*(p.port for p in forks))

    edge = await start_edge(FakeRouter(decide))
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        assert (await caller.next_response()).status == 100
        invites = [await p.next_request() for p in forks]
        # 486, 404 and 503: §16.7 step 6 picks the lowest class, here 4xx; 503 never.
        for peer, inv, code, reason in zip(
            forks, invites, (503, 486, 404), ("Unavailable", "Busy", "Nope"), strict=True
        ):
            peer.send(peer.reply(inv, code, reason), port)
        final = await caller.next_response()
        assert final.status in (404, 486)
        assert final.status == 404  # lowest code within the class, as tm does
    finally:
        await edge.stop(0)


async def test_2xx_cancels_other_branches(udp_peers: PeerFactory) -> None:
    peers = [await udp_peers() for _ in range(3)]
    caller, b1, b2 = peers

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(b1.port, b2.port)

    edge = await start_edge(FakeRouter(decide))
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        inv1, inv2 = await b1.next_request(), await b2.next_request()
        b2.send(b2.reply(inv2, 180, "Ringing", "t2"), port)
        b1.send(b1.reply(inv1, 200, "OK", "t1"), port)
        statuses = [(await caller.next_response()).status for _ in range(3)]
        assert statuses[-1] == 200
        cancel = await b2.next_request()
        assert cancel.method == "CANCEL"
    finally:
        await edge.stop(0)


async def test_serial_failover_on_503_then_failure_route_to_voicemail(
    udp_peers: PeerFactory,
) -> None:
    caller, first, second, voicemail = [await udp_peers() for _ in range(4)]

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        if req.kind == router_pb2.ROUTE_KIND_FAILURE:
            assert req.handler == "MANAGE_FAILURE"
            assert list(req.branch_statuses) == [503, 486]
            return relay_to(voicemail.port)
        targets = [
            router_pb2.Target(uri=f"sip:bob@127.0.0.1:{first.port}", group=0),
            router_pb2.Target(uri=f"sip:bob@127.0.0.1:{second.port}", group=1),
        ]
        return router_pb2.Decision(
            relay=router_pb2.Relay(
                targets=targets,
                mode=router_pb2.Relay.FORK_MODE_SERIAL,
                handlers=router_pb2.Handlers(failure="MANAGE_FAILURE"),
            )
        )

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        inv = await first.next_request()
        assert second.pending() == []
        first.send(first.reply(inv, 503, "Service Unavailable"), port)
        inv2 = await second.next_request()
        second.send(second.reply(inv2, 486, "Busy Here"), port)
        inv3 = await voicemail.next_request()
        voicemail.send(voicemail.reply(inv3, 200, "OK", "vm"), port)
        statuses = []
        while not statuses or statuses[-1] < 200:
            statuses.append((await caller.next_response()).status)
        assert statuses[-1] == 200
        assert router.kinds() == [router_pb2.ROUTE_KIND_REQUEST, router_pb2.ROUTE_KIND_FAILURE]
    finally:
        await edge.stop(0)


async def test_router_killed_mid_request_is_retried_on_the_other_router(
    udp_peers: PeerFactory,
) -> None:
    """Two router backends behind the batched gRPC stream client; the one that got
    the request dies before answering. The edge asks once more within
    router_timeout, the client picks the other backend, and the caller gets that
    router's answer instead of 503."""
    import grpc

    from sipmesh.clients.grpc_clients import GrpcRouterClient
    from sipmesh.clients.grpc_servers import add_router_servicer

    caller = await udp_peers()
    first_call = asyncio.Event()
    routers: list[FakeRouter] = []

    def handler(index: int) -> Callable[[router_pb2.RouteRequest], Awaitable[router_pb2.Decision]]:
        async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
            if not first_call.is_set():
                first_call.set()
                await asyncio.sleep(30)  # this router dies before it answers
            reply = router_pb2.Reply(code=404, reason=f"Not Here (router {index})")
            return router_pb2.Decision(reply=reply)

        return decide

    servers: list[tuple[grpc.aio.Server, str]] = []
    for index in range(2):
        router = FakeRouter(handler(index))
        routers.append(router)
        server = grpc.aio.server()
        add_router_servicer(server, router)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append((server, f"127.0.0.1:{port}"))
    client = GrpcRouterClient(",".join(address for _, address in servers))
    await client.start()
    edge = None
    try:
        await client.stream.wait_ready(5, count=2)
        edge = await start_edge(client, router_timeout=5.0)
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        await asyncio.wait_for(first_call.wait(), 5)
        dying = next(i for i, r in enumerate(routers) if r.calls)
        await servers[dying][0].stop(0)  # the stream breaks with the request in flight
        resp = await caller.next_response()
        assert resp.status == 404, resp
        assert resp.reason == f"Not Here (router {1 - dying})"
        assert len(routers[1 - dying].calls) == 1
    finally:
        if edge is not None:
            await edge.stop(0)
        await client.close()
        for server, _ in servers:
            await server.stop(0)
