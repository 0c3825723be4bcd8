"""Presence and messaging end to end (issue 8): sipp user agents through `sipmesh serve`.

Every test runs twice: against one process (edge, router, registrar and presence,
embedded state) and against a split deployment sharing PostgreSQL, Redis and NATS —
one `edge,router,registrar` process and two `presence` processes, the router
spreading its calls over both (`endpoints.presence` lists them), so a subscription
and the publications it hears of are often handled by different instances.

The sipp scenarios do the SIP; the NOTIFY and MESSAGE bodies are checked here from
sipp's message trace. Settings that make the tests short: presence.min_expires 10
(a subscription of Expires: 10 ends by expiry), sweep_interval 1 s.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.procs import SIPMESH, SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SCENARIOS, SippResult, run_sipp

DOMAIN = "sipmesh.test"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
MIN_EXPIRES = 10
PRESENCE_ENV = {
    "SIPMESH_ROUTER__FEATURES__PRESENCE": "true",
    "SIPMESH_PRESENCE__MIN_EXPIRES": str(MIN_EXPIRES),
    "SIPMESH_PRESENCE__SWEEP_INTERVAL": "1",
    "SIPMESH_PRESENCE__DIALOG_LINGER": "1",
}

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]


# -- sipp's message trace ---------------------------------------------------------------


@dataclass
class SipText:
    """One SIP message of a sipp trace: start line, headers (name lower-cased), body."""

    start: str
    headers: list[tuple[str, str]]
    body: str
    received: bool

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return ""

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/2.0") else self.start.split(" ", 1)[0]


_SEPARATOR = re.compile(r"^-{20,}.*$", re.MULTILINE)


def read_trace(path: Path) -> list[SipText]:
    """The messages of a -message_file (sipp -trace_msg), in order."""
    try:
        text = path.read_text(errors="replace").replace("\r\n", "\n")
    except OSError:
        return []
    messages: list[SipText] = []
    for chunk in _SEPARATOR.split(text):
        lines = chunk.strip("\n").split("\n")
        if len(lines) < 2 or "message" not in lines[0]:
            continue
        received = "received" in lines[0]
        raw = "\n".join(lines[1:]).strip("\n")
        head, _, body = raw.partition("\n\n")
        head_lines = [ln.strip() for ln in head.split("\n") if ln.strip()]
        if not head_lines:
            continue
        headers = []
        for line in head_lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        messages.append(SipText(head_lines[0], headers, body.strip(), received))
    return messages


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


# -- deployments ------------------------------------------------------------------------


@dataclass
class Deployment:
    """sipmesh as one process or split; ``sip`` is the process with the edge."""

    name: str
    sip: SipmeshProcess
    procs: list[SipmeshProcess]
    db_url: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()[-3000:]}" for p in self.procs)

    def stop(self) -> None:
        # Presence first, so that the core's edge still carries their final NOTIFYs.
        for proc in reversed(self.procs):
            proc.stop()
        for step in self.cleanup:
            step()


def _add_users(db_url: str) -> None:
    for user, password in USERS.items():
        ctl("--db", db_url, "add", f"{user}@{DOMAIN}", password)


def one_process(workdir: Path, env: dict[str, str] | None = None) -> Deployment:
    proc = make_process(
        "one",
        workdir,
        targets="edge,router,registrar,presence",
        env={**PRESENCE_ENV, **(env or {})},
        extra_args=["--domain", DOMAIN],
    )
    _add_users(proc.env["SIPMESH_DB"])
    proc.start()
    deployment = Deployment("one", proc, [proc], proc.env["SIPMESH_DB"])
    proc.wait_ready()
    return deployment


async def _admin_sql(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def split_deployment(request: pytest.FixtureRequest, workdir: Path) -> Deployment:
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    redis_url: str = request.getfixturevalue("redis_url")
    nats_url: str = request.getfixturevalue("nats_url")
    prefix: str = request.getfixturevalue("unique_prefix")
    database = f"sipmesh_{prefix}"
    asyncio.run(_admin_sql(admin_url, f'CREATE DATABASE "{database}"'))
    db_url = admin_url.rsplit("/", 1)[0] + "/" + database

    def drop() -> None:
        asyncio.run(_admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    shared = {
        **PRESENCE_ENV,
        "SIPMESH_DB": db_url,
        "SIPMESH_STATE": redis_url,
        "SIPMESH_BUS": nats_url,
        # Redis keys and NATS subjects of this test only.
        "SIPMESH_NAMESPACE": prefix,
    }
    presence = [
        make_process(f"presence{i}", workdir, targets="presence", transports=(), env=shared)
        for i in (1, 2)
    ]
    core = make_process(
        "core",
        workdir,
        targets="edge,router,registrar",
        env={
            **shared,
            "SIPMESH_ENDPOINTS__PRESENCE": ",".join(f"127.0.0.1:{p.grpc_port}" for p in presence),
        },
        extra_args=["--domain", DOMAIN],
    )
    deployment = Deployment("split", core, [core, *presence], db_url, [drop])
    try:
        subprocess.run(
            [*SIPMESH, "db", "init", "--db", db_url],
            check=True,
            capture_output=True,
            timeout=60,
            env=core.env,
        )
        _add_users(db_url)
        for proc in deployment.procs:
            proc.start()
        for proc in deployment.procs:
            proc.wait_ready()
    except BaseException:
        deployment.stop()
        raise
    return deployment


@pytest.fixture(params=["one", "split"])
def deployment(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Deployment]:
    made = one_process(workdir) if request.param == "one" else split_deployment(request, workdir)
    try:
        yield made
    finally:
        made.stop()


# -- user agents ------------------------------------------------------------------------


def inject(workdir: Path, name: str, *rows: str) -> Path:
    path = workdir / name
    path.write_text("SEQUENTIAL\n" + "".join(f"{row}\n" for row in rows))
    return path


@dataclass
class Agent:
    """A sipp running in the background, with its message trace."""

    proc: subprocess.Popen[bytes]
    trace: Path
    workdir: Path

    def messages(self) -> list[SipText]:
        return read_trace(self.trace)

    def received(self, method: str) -> list[SipText]:
        return [m for m in self.messages() if m.received and m.method == method]

    def finish(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_agent(
    d: Deployment,
    workdir: Path,
    name: str,
    scenario: str,
    *,
    inf: Path | None = None,
    user: str = "",
    port: int | None = None,
    calls: int = 1,
    timeout: float = 40,
) -> Agent:
    trace = workdir / name / "messages.log"
    extra = ["-trace_msg", "-message_file", str(trace)]
    if user:
        extra += ["-au", user, "-ap", USERS[user]]
    if calls:
        extra += ["-m", str(calls)]
    proc = run_sipp(
        f"127.0.0.1:{d.sip.sip_port}" if calls else "",
        scenario=scenario,
        workdir=workdir / name,
        inf=inf,
        local_port=port,
        extra=extra,
        timeout=timeout,
        background=True,
    )
    assert isinstance(proc, subprocess.Popen)
    return Agent(proc, trace, workdir / name)


def run_agent(
    d: Deployment, workdir: Path, name: str, scenario: str, inf: Path, user: str, **kw: object
) -> SippResult:
    result = run_sipp(
        f"127.0.0.1:{d.sip.sip_port}",
        scenario=scenario,
        workdir=workdir / name,
        inf=inf,
        extra=[
            "-au",
            user,
            "-ap",
            USERS[user],
            "-trace_msg",
            "-message_file",
            str(workdir / name / "messages.log"),
        ],
        timeout=20,
        **kw,  # type: ignore[arg-type]
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + d.logs()
    return result


def expect_scenario(workdir: Path, method: str, headers: list[str], body: str, status: int) -> Path:
    """presence_expect.xml.in for one request and the final status it must get."""
    text = (SCENARIOS / "presence_expect.xml.in").read_text()
    text = text.replace("@HEADERS@", "\n".join(f"      {h}" for h in headers))
    text = text.replace("@BODY@", body).replace("@METHOD@", method)
    path = workdir / f"{method.lower()}_expect_{status}.xml"
    path.write_text(text.replace("@STATUS@", str(status)))
    return path


def watch(
    d: Deployment, workdir: Path, watcher: str, presentity: str, event: str, expires: int
) -> Agent:
    inf = inject(
        workdir,
        f"watch-{watcher}-{event}.csv",
        f"{watcher};{DOMAIN};{presentity};{event};{expires}",
    )
    return start_agent(
        d, workdir, f"watch-{watcher}-{event}", "presence_watch.xml", inf=inf, user=watcher
    )


def basic(body: str) -> list[str]:
    return re.findall(r"<basic>(\w+)</basic>", body)


def wait_notifies(d: Deployment, agent: Agent, count: int, timeout: float = 15) -> list[SipText]:
    wait_for(
        f"{count} NOTIFYs at {agent.workdir.name}",
        lambda: len(agent.received("NOTIFY")) >= count,
        timeout,
        lambda: "\n".join(m.start + "\n" + m.body for m in agent.messages()) + d.logs(),
    )
    return agent.received("NOTIFY")


# -- tests ------------------------------------------------------------------------------


def test_watcher_gets_initial_state_each_publication_and_expiry(
    deployment: Deployment, workdir: Path
) -> None:
    """RFC 3856/6665: initial NOTIFY, one NOTIFY per PUBLISH (RFC 3903), and the
    terminating NOTIFY when the subscription expires (Expires = min_expires)."""
    d = deployment
    bob = watch(d, workdir, "bob", "alice", "presence", MIN_EXPIRES)
    try:
        first = wait_notifies(d, bob, 1)[0]
        assert first.get("Event") == "presence"
        assert first.get("Subscription-State").startswith("active;expires=")
        assert first.get("Content-Type") == "application/pidf+xml"
        # No publication yet: the neutral document (one closed tuple).
        assert basic(first.body) == ["closed"], first.body
        assert f'entity="sip:alice@{DOMAIN}"' in first.body

        run_agent(
            d,
            workdir,
            "publish",
            "presence_publish.xml",
            inject(workdir, "a.csv", f"alice;{DOMAIN}"),
            "alice",
        )
        assert bob.finish(3 * MIN_EXPIRES) == 0, d.logs()
    finally:
        bob.kill()
    notifies = bob.received("NOTIFY")
    assert [basic(n.body) for n in notifies] == [["closed"], ["open"], ["closed"], ["closed"]], [
        n.body for n in notifies
    ]
    # The RPID person element is passed on as published (RFC 4480).
    assert "<rpid:on-the-phone/>" in notifies[1].body
    states = [n.get("Subscription-State") for n in notifies]
    assert all(s.startswith("active;expires=") for s in states[:3]), states
    assert states[3] == "terminated;reason=timeout", states
    # Exactly once: four distinct NOTIFY transactions, CSeq increasing (RFC 6665 §4.1.2.2
    # in-dialog requests), even with two presence instances.
    cseqs = [int(n.get("CSeq").split()[0]) for n in notifies]
    assert cseqs == sorted(set(cseqs)), cseqs
    # One dialog: the same Call-ID and tags on each NOTIFY.
    assert len({(n.get("Call-ID"), n.get("From"), n.get("To")) for n in notifies}) == 1


def test_winfo_reports_the_watcher(deployment: Deployment, workdir: Path) -> None:
    """RFC 3857/3858: alice's presence.winfo subscription lists bob watching her."""
    d = deployment
    bob = watch(d, workdir, "bob", "alice", "presence", 600)
    alice: Agent | None = None
    try:
        wait_notifies(d, bob, 1)
        alice = watch(d, workdir, "alice", "alice", "presence.winfo", 600)
        winfo = wait_notifies(d, alice, 1)[0]
        assert winfo.get("Event") == "presence.winfo"
        assert winfo.get("Content-Type") == "application/watcherinfo+xml"
        assert f'resource="sip:alice@{DOMAIN}"' in winfo.body, winfo.body
        watchers = re.findall(r"<watcher\b([^>]*)>([^<]*)</watcher>", winfo.body)
        assert [(uri.strip(), 'status="active"' in attrs) for attrs, uri in watchers] == [
            (f"sip:bob@{DOMAIN}", True)
        ], winfo.body
    finally:
        bob.kill()
        if alice is not None:
            alice.kill()


def test_refresh_and_unsubscribe_inside_the_dialog(deployment: Deployment, workdir: Path) -> None:
    """RFC 6665 §4.1.2.1/§4.1.2.3: a refresh and an unsubscribe (Expires: 0) sent to the
    dialog's remote target each get 200 and a NOTIFY, the last one terminated. Split:
    the in-dialog requests may reach the other presence instance, which takes over."""
    d = deployment
    run_agent(
        d,
        workdir,
        "unsubscribe",
        "presence_unsubscribe.xml",
        inject(workdir, "u.csv", f"bob;{DOMAIN};alice;presence;600"),
        "bob",
    )
    trace = read_trace(workdir / "unsubscribe" / "messages.log")
    notifies = [m for m in trace if m.received and m.method == "NOTIFY"]
    states = [n.get("Subscription-State") for n in notifies]
    assert states == ["active;expires=600", "active;expires=600", "terminated;reason=timeout"]
    cseqs = [int(n.get("CSeq").split()[0]) for n in notifies]
    assert cseqs == sorted(set(cseqs)), cseqs
    in_dialog = [m for m in trace if not m.received and m.method == "SUBSCRIBE"][2:]
    assert len(in_dialog) == 2
    # Sent to the Contact of presence's 2xx (the edge), not to the presentity's AOR.
    assert all(f"sip:alice@{DOMAIN}" not in m.start for m in in_dialog), in_dialog


def register(d: Deployment, workdir: Path, user: str, contact_port: int) -> None:
    run_agent(
        d,
        workdir,
        f"reg-{user}",
        "register_contact.xml",
        inject(workdir, f"reg-{user}.csv", f"{user};{DOMAIN};{contact_port}"),
        user,
    )


def test_call_produces_dialog_notifies(deployment: Deployment, workdir: Path) -> None:
    """RFC 4235: a watcher of alice's dialog package hears of alice's call to carol."""
    d = deployment
    carol_port = free_port()
    carol = start_agent(d, workdir, "carol-uas", "uas_answer.xml", port=carol_port, calls=0)
    bob = watch(d, workdir, "bob", "alice", "dialog", 600)
    try:
        register(d, workdir, "carol", carol_port)
        first = wait_notifies(d, bob, 1)[0]
        assert first.get("Event") == "dialog"
        assert first.get("Content-Type") == "application/dialog-info+xml"
        assert "<dialog " not in first.body, first.body  # no call yet
        run_agent(
            d,
            workdir,
            "call",
            "call_auth.xml",
            inject(workdir, "call.csv", f"alice;{DOMAIN};carol"),
            "alice",
        )

        def states() -> list[list[str]]:
            return [
                re.findall(r"<state[^>]*>(\w+)</state>", n.body) for n in bob.received("NOTIFY")
            ]

        wait_for(
            "a terminated dialog",
            lambda: any("terminated" in s for s in states()),
            15,
            lambda: "\n".join(n.body for n in bob.received("NOTIFY")) + d.logs(),
        )
    finally:
        bob.kill()
        carol.kill()
    notifies = bob.received("NOTIFY")
    seen = states_of(notifies)
    assert ["confirmed"] in seen, seen
    assert seen.index(["confirmed"]) < seen.index(["terminated"]), seen
    confirmed = notifies[seen.index(["confirmed"])].body
    # alice placed the call: she is the initiator; the remote side is carol.
    assert 'direction="initiator"' in confirmed, confirmed
    assert f"sip:carol@{DOMAIN}" in confirmed, confirmed
    versions = [int(v) for n in notifies for v in re.findall(r'version="(\d+)"', n.body)[:1]]
    assert versions == sorted(set(versions)), versions


def states_of(notifies: list[SipText]) -> list[list[str]]:
    return [re.findall(r"<state[^>]*>(\w+)</state>", n.body) for n in notifies]


def test_message_summary_subscription_goes_to_presence(
    deployment: Deployment, workdir: Path
) -> None:
    """RFC 3842 through the default script: SUBSCRIBE message-summary reaches presence
    (not the voicemail diversion of kamailio.cfg), and a PUBLISH of the state (what a
    voicemail server sends) gives the watcher a NOTIFY with it."""
    d = deployment
    alice = watch(d, workdir, "alice", "alice", "message-summary", 600)
    try:
        first = wait_notifies(d, alice, 1)[0]
        assert first.get("Content-Type") == "application/simple-message-summary"
        assert "Messages-Waiting: no" in first.body, first.body
        summary = (
            "Messages-Waiting: yes\nMessage-Account: sip:alice@sipmesh.test\nVoice-Message: 2/8"
        )
        publish = expect_scenario(
            workdir,
            "PUBLISH",
            [
                "Event: message-summary",
                "Expires: 600",
                "Content-Type: application/simple-message-summary",
            ],
            summary,
            200,
        )
        run_agent(
            d,
            workdir,
            "mwi",
            str(publish),
            inject(workdir, "p.csv", f"alice;{DOMAIN};alice"),
            "alice",
        )
        second = wait_notifies(d, alice, 2)[1]
    finally:
        alice.kill()
    assert second.get("Event") == "message-summary"
    assert "Messages-Waiting: yes" in second.body, second.body
    assert "Voice-Message: 2/8" in second.body, second.body
