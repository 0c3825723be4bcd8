"""A call between two baresip user agents through `sipmesh serve` with NAT handling and
media relaying on (issue 10's done-when; issue 4's NATMANAGE).

Both agents register over TCP, so the edge detects them as NATed (nat_uac_test 19:
the Via port is not the connection's source port), and the default routing script's
NATMANAGE asks for the media relay (rtpengine_manage) in MANAGE_BRANCH and
MANAGE_REPLY. The test checks what each agent saw (its SIP trace, ``baresip -s``):
the SDP it received points at the relay's ports; the relay's own statistics (gRPC
List) and both agents' RTP counters show media both ways; the BYE deletes the
session (relay List and its Prometheus gauge).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import shutil
import socket
import struct
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipmesh.clients.grpc_clients import GrpcMediaRelayClient
from sipmesh.gen.sipmesh.v1 import media_relay_pb2
from tests.e2e.procs import SipmeshProcess, ctl, make_process

DOMAIN = "sipmesh.test"
BARESIP = shutil.which("baresip")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(BARESIP is None, reason="baresip is not installed"),
]


def tone(path: Path, seconds: int = 30) -> None:
    """An 8 kHz mono 440 Hz WAV (ausine only makes 48 kHz, PCMU needs 8 kHz)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                for i in range(8000 * seconds)
            )
        )


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def port_pair() -> int:
    """A port P with P and P+1 free: baresip listens on P (UDP, TCP) and P+1 (TLS)."""
    for _ in range(200):
        port = random.randrange(20000, 29000)
        if _free(port) and _free(port + 1):
            return port
    raise RuntimeError("no free port pair")


@dataclass
class Agent:
    """One baresip process with its config dir, SIP port and ctrl_tcp port."""

    user: str
    home: Path
    sip_port: int
    ctrl_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.home / "baresip.log"

    def configure(self, wav: Path, sipmesh_port: int) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        config = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "call_local_timeout": "30",
            # aubridge: a player that needs no sound card; aufile: the tone as source.
            "audio_player": "aubridge,nil",
            "audio_alert": "aubridge,nil",
            "audio_source": f"aufile,{wav}",
            "rtcp_mux": "no",
            "rtp_stats": "yes",  # the call's RTP counters when it ends
            "module_path": "/usr/lib/baresip/modules",
            "ctrl_tcp_listen": f"127.0.0.1:{self.ctrl_port}",
        }
        lines = [f"{k}\t{v}" for k, v in config.items()]
        lines += [f"module\t{m}" for m in ("g711.so", "aufile.so", "aubridge.so")]
        lines += ["module_tmp\tuuid.so", "module_tmp\taccount.so"]
        lines += ["module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        (self.home / "config").write_text("\n".join(lines) + "\n")
        # TCP towards sipmesh: the edge sees the Via port differ from the source port
        # (nat_uac_test bit 16), so the default script's NATMANAGE relays the media.
        account = (
            f"<sip:{self.user}@{DOMAIN};transport=tcp>;auth_pass={self.user}-pw;"
            f'outbound="sip:127.0.0.1:{sipmesh_port};transport=tcp";regint=60;'
            "answermode=auto;audio_codecs=PCMU"
        )
        (self.home / "accounts").write_text(account + "\n")

    def start(self) -> None:
        assert BARESIP is not None
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [BARESIP, "-s", "-f", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found is not None:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.user}: no {pattern!r} in:\n{self.log()[-4000:]}")

    def command(self, command: str, params: str = "") -> dict[str, object]:
        """One ctrl_tcp command (JSON in a netstring); returns its response."""
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5) as sock:
            sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
            data = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                data += sock.recv(65536)
                for match in re.finditer(rb"(\d+):(\{.*?\}),", data, re.S):
                    message = json.loads(match.group(2))
                    if message.get("response"):
                        return dict(message)
        raise AssertionError(f"{self.user}: no answer to {command}")

    def received_sdp(self, first_line: str, sipmesh_port: int) -> tuple[str, int]:
        """(c= address, audio port) of the SDP in a message this agent received from
        sipmesh whose first line starts with ``first_line`` (the -s SIP trace)."""
        blocks = re.findall(
            r"(?:TCP|UDP) 127\.0\.0\.1:(\d+) -> [\d.:]+\r?\n(.*?)(?:\x1b\[;m|\Z)", self.log(), re.S
        )
        for src, text in blocks:
            if int(src) != sipmesh_port or not text.startswith(first_line):
                continue
            if "CSeq:" in text and not re.search(r"CSeq: \d+ INVITE", text):
                continue
            conn = re.search(r"^c=IN IP4 (\S+)", text, re.M)
            media = re.search(r"^m=audio (\d+) ", text, re.M)
            if conn is not None and media is not None:
                return conn.group(1), int(media.group(1))
        raise AssertionError(f"{self.user}: no {first_line!r} with SDP from sipmesh")

    def own_audio_port(self) -> int:
        """The audio port this agent offered or answered with (its own SDP)."""
        found = re.search(
            r"-> 127\.0\.0\.1:\d+\r?\n[^\x1b]*?^m=audio (\d+) ", self.log(), re.M | re.S
        )
        assert found is not None
        return int(found.group(1))

    def rtp_counters(self) -> tuple[int, int]:
        """(transmitted, received) RTP packets of the call just ended (rtp_stats)."""
        found = self.wait_for(r"packets:\s+(\d+)\s+(\d+)")
        return int(found.group(1)), int(found.group(2))


def relay_sessions(grpc_port: int) -> media_relay_pb2.ListSessionsReply:
    async def query() -> media_relay_pb2.ListSessionsReply:
        client = GrpcMediaRelayClient(f"127.0.0.1:{grpc_port}")
        await client.start()
        try:
            return await client.list_sessions(media_relay_pb2.ListSessionsRequest(), timeout=5)
        finally:
            await client.close()

    return asyncio.run(query())


def metric(proc: SipmeshProcess, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", proc.metrics(), re.M)
    assert found is not None, name
    return float(found.group(1))


@pytest.fixture
def sipmesh_with_relay(workdir: Path) -> tuple[SipmeshProcess, tuple[int, int]]:
    low = random.randrange(30000, 39000, 2)
    ports = (low, low + 199)
    env = {
        "SIPMESH_ROUTER__FEATURES__NAT": "true",
        "SIPMESH_MEDIA_RELAY__BIND_IPV4": "127.0.0.1",
        "SIPMESH_MEDIA_RELAY__PORT_MIN": str(ports[0]),
        "SIPMESH_MEDIA_RELAY__PORT_MAX": str(ports[1]),
        "SIPMESH_MEDIA_RELAY__NG_LISTEN": "",
    }
    proc = make_process(
        "media",
        workdir,
        targets="edge,router,registrar,media-relay",
        env=env,
        extra_args=["--domain", DOMAIN],
    )
    for user in ("alice", "bob"):
        ctl("--db", proc.env["SIPMESH_DB"], "add", f"{user}@{DOMAIN}", f"{user}-pw")
    return proc, ports


def test_baresip_call_media_through_relay_deleted_on_bye(
    sipmesh_with_relay: tuple[SipmeshProcess, tuple[int, int]], workdir: Path
) -> None:
    proc, (port_min, port_max) = sipmesh_with_relay
    wav = workdir / "tone.wav"
    tone(wav)
    agents: list[Agent] = []
    proc.start()
    try:
        proc.wait_ready()
        for user in ("alice", "bob"):
            sip = port_pair()
            ctrl = port_pair()
            agent = Agent(user, workdir / user, sip, ctrl)
            agent.configure(wav, proc.sip_port)
            agent.start()
            agents.append(agent)
        alice, bob = agents
        for agent in agents:
            agent.wait_for(r"200 OK \(sipmesh registrar\)")

        assert alice.command("dial", f"sip:bob@{DOMAIN}")["ok"] is True
        alice.wait_for(r"Call established")
        bob.wait_for(r"Call established")

        # What each side was told: the relay's address and ports, not the other agent's.
        bob_to, bob_port = bob.received_sdp("INVITE ", proc.sip_port)
        alice_to, alice_port = alice.received_sdp("SIP/2.0 200 ", proc.sip_port)
        assert bob_to == alice_to == "127.0.0.1"
        assert port_min <= bob_port <= port_max
        assert port_min <= alice_port <= port_max
        assert bob_port != alice.own_audio_port()
        assert alice_port != bob.own_audio_port()

        # RTP both ways through those ports, counted by the relay (gRPC List).
        deadline = time.monotonic() + 10
        while True:
            listed = relay_sessions(proc.grpc_port)
            assert listed.total == 1, proc.log()
            legs = listed.sessions[0].legs
            per_leg = [sum(s.packets for s in leg.streams) for leg in legs]
            if (len(per_leg) == 2 and min(per_leg) >= 50) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(per_leg) == 2
        assert min(per_leg) >= 50, per_leg  # each leg received media from its agent
        local_ports = {s.local_rtp.port for leg in legs for s in leg.streams}
        assert {alice_port, bob_port} == local_ports
        assert metric(proc, "sipmesh_media_relay_packets_total") >= 100

        # BYE from alice: both agents counted RTP both ways, the session is gone.
        assert alice.command("hangup")["ok"] is True
        bob.wait_for(r"terminated")
        for agent in agents:
            sent, received = agent.rtp_counters()
            assert sent > 0, agent.log()[-2000:]
            assert received > 0, agent.log()[-2000:]
        deadline = time.monotonic() + 5
        while relay_sessions(proc.grpc_port).total and time.monotonic() < deadline:
            time.sleep(0.1)
        assert relay_sessions(proc.grpc_port).total == 0
        assert metric(proc, "sipmesh_media_relay_sessions") == 0
        assert metric(proc, 'sipmesh_edge_media_ops_total{op="delete",outcome="ok"}') >= 1
    finally:
        for agent in agents:
            agent.stop()
        proc.stop()
