"""Interop: a stock Kamailio with its rtpengine module uses sipmesh's relay over ng.

sipp (UAC) → Kamailio (rtpengine_offer on the INVITE, rtpengine_answer on the
reply with SDP, rtpengine_delete on the BYE) → sipp (UAS). While the call is up,
two UDP sockets named in the sipp SDPs exchange RTP through the ports the relay
wrote into the SDPs Kamailio forwarded; the relay counts it; BYE deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from sipmesh.media_relay.service import MediaRelayService
from sipmesh.sip.sdp import parse_sdp

from .conftest import Endpoint, relay_config, rtp

pytestmark = [pytest.mark.sipp, pytest.mark.slow]

KAMAILIO = "/usr/sbin/kamailio"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
HAVE_KAMAILIO = os.path.exists(KAMAILIO)
HAVE_RTPENGINE_MODULE = os.path.exists(f"{MODULES}/rtpengine.so")

CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{kport}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ngport}")

request_route {{
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{
                rtpengine_delete();
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        if (!rtpengine_offer("replace-origin")) {{
            sl_send_reply("503", "Media relay failed");
            exit;
        }}
        t_on_reply("MEDIA");
        $du = "sip:127.0.0.1:{uasport}";
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}

onreply_route[MEDIA] {{
    if (has_body("application/sdp")) {{
        rtpengine_answer("replace-origin");
    }}
}}
"""

SDP = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]\r\n"
    "s=-\r\n"
    "c=IN IP[media_ip_type] [media_ip]\r\n"
    "t=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=sendrecv\r\n"
)

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac with sdp">
  <send retrans="500"><![CDATA[
INVITE sip:service@127.0.0.1:{kport} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: service <sip:service@127.0.0.1:{kport}>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""

UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas with sdp">
  <recv request="INVITE" rrs="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdp_bodies(message_log: Path) -> list[str]:
    """The SDP bodies in a sipp -trace_msg file (each message's text after v=0)."""
    text = message_log.read_text(errors="replace")
    bodies = []
    for chunk in text.split("v=0")[1:]:
        end = chunk.find("\n\n")
        body = "v=0" + (chunk if end < 0 else chunk[:end])
        bodies.append(body.replace("\r\n", "\n").replace("\n", "\r\n").split("\r\n-----")[0])
    return bodies


async def test_kamailio_rtpengine_module_drives_sipmesh_relay(
    tmp_path: Path, endpoints: Callable[..., Endpoint]
) -> None:
    assert HAVE_KAMAILIO, "kamailio is required for this test"
    assert HAVE_RTPENGINE_MODULE, "kamailio's rtpengine module is missing"
    assert shutil.which("sipp"), "sipp is required for this test"
    relay = MediaRelayService(relay_config())
    await relay.start()
    assert relay.ng_address is not None
    kport, uasport, uacport = free_udp_port(), free_udp_port(), free_udp_port()
    caller, callee = endpoints(), endpoints()
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(
        CFG.format(kport=kport, ngport=relay.ng_address[1], uasport=uasport, modules=MODULES)
    )
    (tmp_path / "uac.xml").write_text(
        UAC.format(kport=kport, sdp=SDP.format(port=caller.port), hold_ms=4000)
    )
    (tmp_path / "uas.xml").write_text(UAS.format(sdp=SDP.format(port=callee.port)))
    run = tmp_path / "run"
    run.mkdir()
    kamailio = await asyncio.create_subprocess_exec(
        KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4", "-Y", str(run),
        "-P", str(run / "kamailio.pid"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    uas = uac = None
    try:
        # Kamailio pings the relay over ng when its children start.
        for _ in range(100):
            if relay.ng is not None and relay.ng.requests > 0:
                break
            await asyncio.sleep(0.05)
        assert relay.ng is not None
        assert relay.ng.requests > 0, "kamailio never pinged the relay"
        uas = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(tmp_path / "uas.xml"), "-i", "127.0.0.1", "-p", str(uasport),
            "-m", "1", "-nostdin", "-timeout", "30", "-trace_msg",
            "-message_file", str(tmp_path / "uas.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        uac = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(tmp_path / "uac.xml"), f"127.0.0.1:{kport}", "-i", "127.0.0.1",
            "-p", str(uacport), "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error",
            "-trace_msg", "-message_file", str(tmp_path / "uac.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        )  # fmt: skip

        # Wait until the answer went through the relay (the callee leg has a tag).
        session = None
        for _ in range(200):
            sessions = list(relay.table)
            if sessions and sessions[0].active is not None and sessions[0].active.answered:
                session = sessions[0]
                break
            await asyncio.sleep(0.02)
        assert session is not None, "no answered session on the relay"
        caller_side = session.caller.streams[0].pair.port  # where the caller sends
        callee_side = session.active.streams[0].pair.port  # where the callee sends
        for seq in range(10):
            caller.send(rtp(seq), ("127.0.0.1", caller_side))
            assert (await callee.recv())[0] == rtp(seq)
            callee.send(rtp(100 + seq), ("127.0.0.1", callee_side))
            assert (await caller.recv())[0] == rtp(100 + seq)
        counted = relay.session_stats(session)
        assert counted.packets == 20

        _, err = await asyncio.wait_for(uac.communicate(), 30)
        assert uac.returncode == 0, err.decode(errors="replace")[-2000:]
        await asyncio.wait_for(uas.wait(), 10)
        # The BYE went through rtpengine_delete: the call is gone.
        for _ in range(100):
            if len(relay.table) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(relay.table) == 0
        assert relay.totals()[0] == 20

        # Each side saw an SDP pointing at the relay (Kamailio forwarded the rewrites).
        invite_sdp = parse_sdp(sdp_bodies(tmp_path / "uas.log")[0])
        assert invite_sdp.media[0].port == callee_side
        assert invite_sdp.connection is not None
        assert invite_sdp.connection.address == "127.0.0.1"
        answer_sdp = parse_sdp(sdp_bodies(tmp_path / "uac.log")[-1])
        assert answer_sdp.media[0].port == caller_side
        assert answer_sdp.media[0].direction == "sendrecv"
    finally:
        for proc in (uac, uas, kamailio):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        await relay.stop(0)
