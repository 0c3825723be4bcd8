"""Routing scripts through a running `sipmesh serve` (issue 6): a custom script named
by `router.script` replaces the default one, and a broken script given to `sipmesh ctl
reload` is refused while sipp keeps calls flowing.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from tests.e2e.procs import free_port
from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_call_sipp import DOMAIN, inject, register_at
from tests.e2e.test_routing_features import Peer, admin, call, final_status, peer, start_sipmesh
from tests.e2e.test_routing_features import peers as peers  # the fixture

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]

CUSTOM = '''
"""A custom routing script: every INVITE is answered here, nothing is relayed."""
from sipmesh.router.api import Ctx


def request_route(ctx: Ctx) -> None:
    if ctx.is_method("INVITE"):
        ctx.reply(488, "Custom Script Here", [("X-Script", "custom")])
        return
    ctx.drop("custom script")
'''

# The default script, loaded from a file of the operator's (what reload re-reads).
DEFAULT_COPY = """
from sipmesh.router.default_script import *  # noqa: F403
"""

BROKEN = """
from sipmesh.router.default_script import *  # noqa: F403

def request_route(ctx)  # a syntax error: the running version must stay
    pass
"""


def test_custom_script_in_config_replaces_the_default(workdir: Path) -> None:
    script = workdir / "routing_custom.py"
    script.write_text(CUSTOM)
    core = start_sipmesh(workdir, {"router": {"script": str(script)}})
    try:
        # The default script would challenge alice (407) and look bob up; the custom
        # script answers every INVITE itself with its own status, reason and header.
        trace = workdir / "caller-messages.log"
        result = run_sipp(
            f"127.0.0.1:{core.sip_port}",
            scenario=final_status(workdir, 488),
            workdir=workdir / "caller",
            inf=inject(workdir, "call.csv", f"alice;{DOMAIN};bob"),
            local_port=free_port(),
            extra=["-trace_msg", "-message_file", str(trace)],
            timeout=15,
        )
        assert isinstance(result, SippResult)
        assert result.returncode == 0, result.output + core.log()
        received = trace.read_text(errors="replace")
        assert "SIP/2.0 488 Custom Script Here" in received
        assert "X-Script: custom" in received
        assert "407" not in received.split("SIP/2.0 488")[0]
        assert f"script {script}" in core.log()
    finally:
        assert core.stop() == 0, core.log()


def test_broken_script_is_refused_on_reload_while_calls_flow(
    workdir: Path, peers: list[Peer]
) -> None:
    script = workdir / "routing_ops.py"
    script.write_text(DEFAULT_COPY)
    core = start_sipmesh(
        workdir,
        {
            "router": {"script": str(script)},
            # The load comes from one address: keep the anti-flood check out of it.
            "edge": {"trusted_sources": ["127.0.0.1"]},
        },
    )
    try:
        bob_port = free_port()
        register_at(core, workdir, "bob", "bob-pw", bob_port, "u1")
        bob = peer(peers, workdir, "uas_answer.xml", "bob", bob_port)
        calls = 150
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                run_sipp,
                f"127.0.0.1:{core.sip_port}",
                scenario="call_auth.xml",
                workdir=workdir / "load",
                inf=inject(workdir, "load.csv", f"alice;{DOMAIN};bob"),
                local_port=free_port(),
                extra=["-au", "alice", "-ap", "alice-pw", "-l", "20"],
                calls=calls,
                rate=25,
                timeout=60,
            )
            time.sleep(2.0)  # calls in flight
            script.write_text(BROKEN)
            refused = admin(core, "reload", check=False)
            time.sleep(0.5)
            # A good script again is accepted while the load still runs.
            script.write_text(DEFAULT_COPY + "\n# v2\n")
            accepted = admin(core, "reload")
            result = load.result(90)
        assert isinstance(result, SippResult)
        assert result.failed == 0, result.output + core.log()
        assert result.successful == calls, result.output
        # The reload reports the error with the script's file:line, per instance.
        assert "core: FAILED" in refused, refused
        assert "routing_ops.py:4: syntax error" in refused, refused
        assert "core: ok" in accepted, accepted
        assert len(bob.invites()) == calls
    finally:
        assert core.stop() == 0, core.log()


def test_call_answered_by_the_copy_of_the_default_script(workdir: Path, peers: list[Peer]) -> None:
    """The script file the reload test uses routes like the default script."""
    script = workdir / "routing_ops.py"
    script.write_text(DEFAULT_COPY)
    core = start_sipmesh(workdir, {"router": {"script": str(script)}})
    try:
        result = call(core, workdir, "bob", final_status(workdir, 404))
        assert result.returncode == 0, result.output + core.log()
    finally:
        assert core.stop() == 0, core.log()
