"""The web console in headless chromium against a real `sipmesh serve`.

Loads the console, adds a subscriber through its form, registers that subscriber
with sipp (digest authentication), sees the binding appear in the console's
location page, and saves a screenshot under tests/output/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.admin.cdp import Browser
from tests.e2e.procs import make_process
from tests.e2e.sipp import SippResult, run_sipp

DOMAIN = "sipmesh.test"
TOKEN = "console-test-token"
OUTPUT = Path(__file__).resolve().parents[1] / "output"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sipp,
]


async def test_console_adds_subscriber_and_shows_registration(tmp_path: Path) -> None:
    proc = make_process(
        "console",
        tmp_path,
        targets="edge,router,registrar,admin",
        env={"SIPMESH_ADMIN_API__WRITE_TOKEN": TOKEN},
        extra_args=["--domain", DOMAIN],
    )
    proc.start()
    browser = Browser(tmp_path / "chromium-profile")
    try:
        proc.wait_ready()
        await browser.connect()
        await browser.send("Page.enable")
        base = f"http://127.0.0.1:{proc.admin_port}"
        await browser.send("Page.navigate", url=f"{base}/console/#subscribers")
        await browser.wait_for(
            "document.readyState === 'complete' && typeof SipmeshChart === 'object'"
        )
        await browser.evaluate(
            f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
            "document.querySelector('#login button').click(); true"
        )
        await browser.wait_for("document.querySelector('#who').textContent === 'token accepted'")
        await browser.evaluate(
            "const f = document.querySelector('#sub-add');"
            "f.username.value = 'frank'; f.domain.value = "
            + json.dumps(DOMAIN)
            + "; f.password.value = 'frank-secret';"
            "f.querySelector('button').click(); true"
        )
        await browser.wait_for("document.querySelector('#sub-table').textContent.includes('frank')")

        users = tmp_path / "users.csv"
        users.write_text(f"SEQUENTIAL\nfrank;{DOMAIN}\n")
        result = run_sipp(
            f"127.0.0.1:{proc.sip_port}",
            scenario="register_auth.xml",
            workdir=tmp_path / "sipp",
            inf=users,
            extra=["-au", "frank", "-ap", "frank-secret"],
            timeout=20,
        )
        assert isinstance(result, SippResult)
        assert result.returncode == 0, result.output + proc.log()

        await browser.evaluate("location.hash = '#location'; true")
        contact = await browser.wait_for(
            "(() => { const t = document.querySelector('#loc-table').textContent;"
            f" return t.includes('frank@{DOMAIN}') && t; }})()"
        )
        assert "sip:frank@127.0.0.1" in contact
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "admin-console-location.png"
        await browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        await browser.evaluate("location.hash = '#subscribers'; true")
        await browser.wait_for("document.querySelector('#sub-table').textContent.includes('frank')")
        await browser.screenshot(OUTPUT / "admin-console-subscribers.png")
    finally:
        await browser.close()
        proc.stop()
