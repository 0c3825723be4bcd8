"""Run-time switches of a running ``sipmesh serve`` through the admin API:

- ``sipmesh ctl capture off|on|flagged|show`` (kamcmd siptrace.status): the edge
  stops and resumes mirroring SIP to the HEP receiver of this test;
- ``sipmesh ctl cfg set core debug LEVEL`` (kamcmd cfg.set_now_int core debug): the
  process's log level changes — a debug line appears only while it is DEBUG.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipmesh.observe.hep import decode_hep3
from tests.e2e.procs import SipmeshProcess, ctl, make_process

pytestmark = [pytest.mark.e2e]

DOMAIN = "sipmesh.test"


@pytest.fixture
def hep() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


@pytest.fixture
def proc(tmp_path: Path, hep: socket.socket) -> Iterator[SipmeshProcess]:
    process = make_process(
        "switches",
        tmp_path,
        targets="edge,router,registrar,admin",
        extra_args=["--domain", DOMAIN],
        env={
            "SIPMESH_TELEMETRY__HEP_DESTINATION": f"sip:127.0.0.1:{hep.getsockname()[1]}",
            "SIPMESH_TELEMETRY__CAPTURE_MODE": "all",
            "SIPMESH_TELEMETRY__LOG_LEVEL": "info",
            "SIPMESH_EDGE__ANTIFLOOD": "false",
        },
    )
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, process.log()


def admin(proc: SipmeshProcess, *argv: str) -> str:
    return ctl("--admin", f"127.0.0.1:{proc.grpc_port}", *argv).strip()


def options(proc: SipmeshProcess) -> str:
    """One OPTIONS over UDP, answered by sipmesh; returns its Call-ID."""
    call_id = f"sw-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n"
                f"From: <sip:probe@{DOMAIN}>;tag=sw\r\nTo: <sip:{DOMAIN}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", proc.sip_port),
        )
        assert sock.recv(65535).startswith(b"SIP/2.0 ")
    return call_id


def mirrored(hep: socket.socket, call_id: str) -> int:
    """HEP packets of ``call_id`` that reach the receiver within a short while."""
    found, deadline = 0, time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            data = hep.recv(65535)
        except TimeoutError:
            continue
        if decode_hep3(data).correlation_id == call_id.encode():
            found += 1
    return found


def until_mirrored(proc: SipmeshProcess, hep: socket.socket, want: bool) -> None:
    """The edges poll the switch every 2 s: retry for a bounded time."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (mirrored(hep, options(proc)) > 0) == want:
            return
    raise AssertionError(f"capture did not turn {'on' if want else 'off'}\n{proc.log()}")


def test_capture_switched_off_and_on_through_ctl(proc: SipmeshProcess, hep: socket.socket) -> None:
    # Configured "all": the request and its answer are mirrored.
    assert mirrored(hep, options(proc)) == 2
    assert admin(proc, "capture", "show") == "siptrace.mode = all"

    assert admin(proc, "capture", "off") == "siptrace.mode = off"
    until_mirrored(proc, hep, want=False)
    assert admin(proc, "capture", "show") == "siptrace.mode = off"
    assert mirrored(hep, options(proc)) == 0

    # Kamailio's "on" is every message again; flagged captures only what the routing
    # script flags (the default script flags nothing).
    assert admin(proc, "capture", "on") == "siptrace.mode = all"
    until_mirrored(proc, hep, want=True)
    assert admin(proc, "capture", "flagged") == "siptrace.mode = flagged"
    until_mirrored(proc, hep, want=False)
    assert admin(proc, "cfg", "get", "siptrace") == "siptrace.mode = flagged"
    refused = ctl("--admin", f"127.0.0.1:{proc.grpc_port}", "cfg", "set", "siptrace", "mode",
                  "loud", check=False)  # fmt: skip
    assert refused == ""  # InvalidArgument: exit status 2, nothing on stdout
    assert admin(proc, "capture", "show") == "siptrace.mode = flagged"


def bad_frame(proc: SipmeshProcess, marker: str) -> None:
    """A TCP message whose Content-Length cannot be read: the edge logs at debug level
    why it closes the connection (RFC 3261 §18.3), then closes it."""
    with socket.create_connection(("127.0.0.1", proc.sip_port), timeout=5) as sock:
        sock.sendall(f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nContent-Length: {marker}\r\n\r\n".encode())
        try:
            assert sock.recv(65535) == b""  # closed by the edge once it has logged
        except ConnectionResetError:
            pass


def test_log_level_changes_at_run_time(proc: SipmeshProcess) -> None:
    bad_frame(proc, "quiet1")
    assert "quiet1" not in proc.log()  # INFO: no debug line

    assert admin(proc, "cfg", "set", "core", "debug", "debug") == "log level DEBUG"
    bad_frame(proc, "loud1")
    deadline = time.monotonic() + 5
    while "loud1" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next((x for x in proc.log().splitlines() if "loud1" in x), "")
    assert " DEBUG sipmesh.edge" in line
    assert "bad Content-Length" in line

    assert admin(proc, "cfg", "set", "core", "debug", "INFO") == "log level INFO"
    bad_frame(proc, "quiet2")
    assert "quiet2" not in proc.log()

    out = ctl("--admin", f"127.0.0.1:{proc.grpc_port}", "cfg", "set", "core", "debug", "loud",
              check=False)  # fmt: skip
    assert out == ""  # refused (exit status 2), nothing printed on stdout
