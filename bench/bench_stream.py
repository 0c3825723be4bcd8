#!/usr/bin/env python3
"""Micro-benchmark: edge -> router calls over the batched stream vs one unary RPC each.

Prints microseconds per call (wall time / calls) at a fixed concurrency for:
  - the batched bidirectional stream (sipmesh.clients: BatchingStreamClient), and
  - one unary gRPC call per request (the naive way DESIGN.md warns about).
The router answers every request with the same small Decision, so the figures are
the cost of the plumbing. Not a test; tests/bench/test_bench_stream.py only runs it
with tiny counts.

    .venv/bin/python bench/bench_stream.py [--calls 20000] [--concurrency 100] [--separate]

--separate runs the server in a child process (closer to split mode: client and
server on different cores); otherwise both share one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import grpc

from sipmesh.clients.backend import StreamOptions
from sipmesh.clients.grpc_clients import GrpcRouterClient
from sipmesh.clients.grpc_servers import add_router_servicer
from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2

UNARY_METHOD = "/sipmesh.bench.Unary/Route"

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\nTo: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class ConstantRouter:
    def __init__(self) -> None:
        reply = router_pb2.Reply(code=404, reason="Not Found")
        self._decision = router_pb2.Decision(reply=reply)

    async def route(
        self,
        request: router_pb2.RouteRequest,
        *,
        timeout: float | None = None,
    ) -> router_pb2.Decision:
        return self._decision


async def start_server() -> tuple[grpc.aio.Server, int]:
    router = ConstantRouter()
    server = grpc.aio.server()
    add_router_servicer(server, router)

    async def unary(request: router_pb2.RouteRequest, context: Any) -> router_pb2.Decision:
        return await router.route(request)

    handler = grpc.method_handlers_generic_handler(
        "sipmesh.bench.Unary",
        {
            "Route": grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=router_pb2.RouteRequest.FromString,
                response_serializer=router_pb2.Decision.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def make_request(index: int) -> router_pb2.RouteRequest:
    source = common_pb2.Source(
        remote=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host="192.0.2.10", port=5060),
        edge_id="edge-1",
    )
    return router_pb2.RouteRequest(
        kind=router_pb2.ROUTE_KIND_REQUEST,
        message=common_pb2.SipMessage(raw=INVITE, source=source),
        transaction_id=f"z9hG4bK{index}",
    )


async def run_concurrently(calls: int, concurrency: int, one: Any) -> float:
    counter = iter(range(calls))

    async def worker() -> None:
        for index in counter:
            await one(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def bench(port: int, calls: int, concurrency: int) -> None:
    address = f"127.0.0.1:{port}"
    client = GrpcRouterClient(address, StreamOptions(default_timeout=30))
    await client.start()
    await client.stream.wait_ready(10)
    requests = [make_request(i) for i in range(min(calls, 1000))]

    async def streamed(index: int) -> None:
        decision = await client.route(requests[index % len(requests)])
        assert decision.reply.code == 404

    await run_concurrently(min(calls, 200), concurrency, streamed)  # warm up
    backend = client.stream.backend(address)
    items_before, batches_before = backend.stats.items, backend.stats.batches
    elapsed = await run_concurrently(calls, concurrency, streamed)
    items = backend.stats.items - items_before
    batches = max(1, backend.stats.batches - batches_before)
    stream_us = elapsed / calls * 1e6
    print(
        f"batched stream: {stream_us:8.1f} µs/call  ({calls} calls, concurrency {concurrency}, "
        f"mean batch {items / batches:.1f})"
    )
    await client.close()

    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary(
            UNARY_METHOD,
            request_serializer=router_pb2.RouteRequest.SerializeToString,
            response_deserializer=router_pb2.Decision.FromString,
        )

        async def unary(index: int) -> None:
            decision = await method(requests[index % len(requests)], timeout=30)
            assert decision.reply.code == 404

        await run_concurrently(min(calls, 200), concurrency, unary)
        elapsed = await run_concurrently(calls, concurrency, unary)
    unary_us = elapsed / calls * 1e6
    print(f"unary per call: {unary_us:8.1f} µs/call  ({calls} calls, concurrency {concurrency})")
    print(f"ratio unary/stream: {unary_us / stream_us:.1f}x")


async def serve_forever() -> None:
    server, port = await start_server()
    print(port, flush=True)  # the parent reads the port from our stdout
    await server.wait_for_termination()


async def main_async(options: argparse.Namespace) -> None:
    if options.serve:
        await serve_forever()
        return
    if not options.separate:
        server, port = await start_server()
        try:
            await bench(port, options.calls, options.concurrency)
        finally:
            await server.stop(0)
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        await bench(int(line), options.calls, options.concurrency)
    finally:
        child.terminate()
        await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="batched stream vs unary gRPC, µs per call")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--separate", action="store_true", help="server in a child process")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(options))


if __name__ == "__main__":
    main()
