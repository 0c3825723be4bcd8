"""Media relay benchmark: sipmesh's relay side by side with rtpengine (userspace).

For each relay (each in its own process, driven over its ng control socket):

1. ``paced``: N calls, each with RTP both ways, 160-byte payloads at 50 packets/s
   per direction (G.711 at 20 ms ptime). Reports packets relayed per second, loss,
   the latency the relay adds over a direct loopback hop (p50/p99), and the
   relay's CPU time per packet (utime+stime of its process, all threads).
2. ``flood``: the same calls, callers sending as fast as the driver can for a few
   seconds: relayed packets/s and CPU per packet at saturation. The driver is
   Python too; when the relay's CPU stays below 100 % the driver was the limit.

rtpengine runs with ``--table=-1`` (no kernel forwarding) and one worker thread,
so the CPU-per-packet ratio compares one core with one core. Run:

    .venv/bin/python bench/bench_media_relay.py --streams 50 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HZ = os.sysconf("SC_CLK_TCK")
PAYLOAD = 160


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def media_port(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError("no m=audio in reply")


# -- relays under test --------------------------------------------------------------------
def serve_sipmesh(ng_port: int, port_min: int, port_max: int) -> None:
    """Child process: run sipmesh's relay until SIGTERM."""
    from sipmesh.media_relay.service import MediaRelayService
    from sipmesh.runtime.sections.media_relay import MediaRelayConfig

    async def main() -> None:
        config = MediaRelayConfig(
            port_min=port_min,
            port_max=port_max,
            bind_ipv4="127.0.0.1",
            ng_listen=f"127.0.0.1:{ng_port}",
            media_timeout=0,
        )
        service = MediaRelayService(config)
        await service.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await service.stop(0)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def start_relay(kind: str, ng_port: int, port_min: int, port_max: int) -> subprocess.Popen[bytes]:
    if kind == "sipmesh":
        cmd = [
            sys.executable, __file__, "--serve-sipmesh",
            f"{ng_port}:{port_min}:{port_max}",
        ]  # fmt: skip
    else:
        cmd = [
            "rtpengine", "--config-file=none", "--foreground", "--log-stderr",
            "--log-level=" + os.environ.get("RTPENGINE_LOG_LEVEL", "3"),
            "--table=-1", "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{ng_port}", f"--port-min={port_min}",
            f"--port-max={port_max}", "--num-threads=1",
        ]  # fmt: skip
    log = os.environ.get("RTPENGINE_LOG") if kind == "rtpengine" else None
    if log:
        with open(log, "wb") as err:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the driver -----------------------------------------------------------------------
@dataclass
class Counter:
    received: int = 0
    latencies: list[int] = field(default_factory=list)
    sample_every: int = 1


class Receiver(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter) -> None:
        self.c = counter

    def datagram_received(self, data: bytes, addr: Any) -> None:
        c = self.c
        c.received += 1
        if c.received % c.sample_every == 0 and len(data) >= 20:
            c.latencies.append(time.perf_counter_ns() - struct.unpack_from("!q", data, 12)[0])


@dataclass
class Leg:
    sock: socket.socket
    target: tuple[str, int] = ("127.0.0.1", 0)
    ssrc: int = 1


async def open_leg(counter: Counter) -> Leg:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Receiver(counter), sock=sock)
    return Leg(sock, ssrc=sock.getsockname()[1])


async def setup_calls(ng: Any, n: int, counter: Counter) -> list[tuple[Leg, Leg]]:
    calls = []
    for i in range(n):
        a, b = await open_leg(counter), await open_leg(counter)
        call_id = f"bench-{os.getpid()}-{i}"
        offer = await ng.command(
            "offer", call_id=call_id, from_tag="a", sdp=sdp(a.sock.getsockname()[1]),
            flags=["trust-address"], timeout=5,
        )  # fmt: skip
        answer = await ng.command(
            "answer", call_id=call_id, from_tag="a", to_tag="b",
            sdp=sdp(b.sock.getsockname()[1]), flags=["trust-address"], timeout=5,
        )  # fmt: skip
        if offer.get("result") != b"ok" or answer.get("result") != b"ok":
            raise RuntimeError(f"relay refused the call: {offer} {answer}")
        b.target = ("127.0.0.1", media_port(offer["sdp"]))
        a.target = ("127.0.0.1", media_port(answer["sdp"]))
        calls.append((a, b))
    return calls


def packet(seq: int, ssrc: int = 1) -> bytes:
    """RTP (RFC 3550 §5.1) with a real sequence number and timestamp; the payload starts
    with the send time for the latency measurement."""
    header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc)
    return header + struct.pack("!q", time.perf_counter_ns()) + bytes(PAYLOAD - 8)


async def paced(legs: list[Leg], seconds: float, counter: Counter) -> int:
    """50 packets/s from every leg; returns packets sent."""
    sent = 0
    ticks = int(seconds * 50)
    start = time.perf_counter()
    for tick in range(ticks):
        for leg in legs:
            try:
                leg.sock.sendto(packet(tick, leg.ssrc), leg.target)
                sent += 1
            except BlockingIOError:
                pass
        delay = start + (tick + 1) * 0.02 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.2)  # let the last packets arrive
    return sent


async def flood(legs: list[Leg], seconds: float) -> int:
    sent = 0
    end = time.perf_counter() + seconds
    seq = 10000
    while time.perf_counter() < end:
        for _ in range(20):
            seq += 1
            for leg in legs:
                try:
                    leg.sock.sendto(packet(seq, leg.ssrc), leg.target)
                    sent += 1
                except BlockingIOError:
                    pass
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    return sent


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1000.0  # µs


async def direct_latency(streams: int, seconds: float) -> tuple[float, float]:
    """Latency of the same paced traffic sent straight between the sockets (no relay)."""
    counter = Counter(sample_every=1)
    legs = []
    for _ in range(streams):
        a, b = await open_leg(counter), await open_leg(counter)
        a.target = b.sock.getsockname()
        b.target = a.sock.getsockname()
        legs += [a, b]
    await paced(legs, seconds, counter)
    for leg in legs:
        leg.sock.close()
    return pct(counter.latencies, 0.5), pct(counter.latencies, 0.99)


async def run_one(kind: str, args: argparse.Namespace) -> dict[str, float]:
    from sipmesh.media_relay.ng import NgClient

    ng_port = free_port()
    port_min = 42000 if kind == "sipmesh" else 46000
    proc = start_relay(kind, ng_port, port_min, port_min + 4 * args.streams + 100)
    ng = await NgClient.connect("127.0.0.1", ng_port)
    try:
        for _ in range(100):
            if await ng.ping(timeout=0.1):
                break
        else:
            raise RuntimeError(f"{kind} did not answer ng ping")
        counter = Counter()
        calls = await setup_calls(ng, args.streams, counter)
        legs = [leg for pair in calls for leg in pair]
        cpu0 = cpu_seconds(proc.pid)
        sent = await paced(legs, args.seconds, counter)
        cpu1 = cpu_seconds(proc.pid)
        result = {
            "paced_sent": sent,
            "paced_received": counter.received,
            "paced_pps": counter.received / args.seconds,
            "loss_pct": 100.0 * (sent - counter.received) / max(sent, 1),
            "p50_us": pct(counter.latencies, 0.5),
            "p99_us": pct(counter.latencies, 0.99),
            "paced_cpu_us_per_pkt": 1e6 * (cpu1 - cpu0) / max(counter.received, 1),
            "paced_cpu_pct": 100.0 * (cpu1 - cpu0) / args.seconds,
        }
        counter.received = 0
        counter.sample_every = 1 << 30
        callers = [a for a, _ in calls]
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        sent = await flood(callers, args.flood_seconds)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(proc.pid)
        result.update(
            flood_sent=sent,
            flood_pps=counter.received / elapsed,
            flood_cpu_us_per_pkt=1e6 * (cpu1 - cpu0) / max(counter.received, 1),
            flood_cpu_pct=100.0 * (cpu1 - cpu0) / elapsed,
        )
        for leg in legs:
            leg.sock.close()
        return result
    finally:
        ng.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ratio(a: dict[str, float], b: dict[str, float], key: str) -> float:
    return a[key] / b[key] if b[key] else float("nan")


async def main(args: argparse.Namespace) -> int:
    d50, d99 = await direct_latency(args.streams, min(args.seconds, 2.0))
    kinds = ["sipmesh"]
    if shutil.which("rtpengine") and not args.skip_rtpengine:
        kinds.append("rtpengine")
    results = {kind: await run_one(kind, args) for kind in kinds}
    print(
        f"media relay: {args.streams} calls x 2 directions, {PAYLOAD}-byte RTP at 50 pps, "
        f"paced {args.seconds} s, flood {args.flood_seconds} s"
    )
    print(f"direct loopback latency: p50 {d50:.0f} µs, p99 {d99:.0f} µs")
    header = (
        "relay", "paced pps", "loss %", "+p50 µs", "+p99 µs", "cpu µs/pkt",
        "flood pps", "flood cpu µs/pkt", "flood cpu %",
    )  # fmt: skip
    print("  ".join(f"{h:>16}" for h in header))
    for kind, r in results.items():
        row = (
            kind,
            f"{r['paced_pps']:.0f}",
            f"{r['loss_pct']:.2f}",
            f"{r['p50_us'] - d50:.0f}",
            f"{r['p99_us'] - d99:.0f}",
            f"{r['paced_cpu_us_per_pkt']:.1f}",
            f"{r['flood_pps']:.0f}",
            f"{r['flood_cpu_us_per_pkt']:.1f}",
            f"{r['flood_cpu_pct']:.0f}",
        )
        print("  ".join(f"{c:>16}" for c in row))
    if "rtpengine" in results:
        s, e = results["sipmesh"], results["rtpengine"]
        print(
            "ratio sipmesh/rtpengine: "
            f"cpu per packet paced {ratio(s, e, 'paced_cpu_us_per_pkt'):.2f}x, "
            f"flood {ratio(s, e, 'flood_cpu_us_per_pkt'):.2f}x; "
            f"flood pps {ratio(s, e, 'flood_pps'):.2f}x"
        )
    else:
        print("rtpengine: not installed (apt-get install rtpengine-daemon); no ratio")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50, help="concurrent calls")
    parser.add_argument("--seconds", type=float, default=5.0, help="paced phase length")
    parser.add_argument("--flood-seconds", type=float, default=3.0, help="flood phase length")
    parser.add_argument("--skip-rtpengine", action="store_true")
    parser.add_argument("--serve-sipmesh", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve_sipmesh:
        ng, low, high = (int(x) for x in ns.serve_sipmesh.split(":"))
        serve_sipmesh(ng, low, high)
        sys.exit(0)
    try:
        import uvloop

        sys.exit(uvloop.run(main(ns)))
    except ImportError:
        sys.exit(asyncio.run(main(ns)))
