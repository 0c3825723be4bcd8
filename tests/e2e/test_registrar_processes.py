"""The registrar through real `sipmesh serve` processes (issue 5, "Done when").

- A replayed Authorization (same nonce, nc, cnonce and response) is refused by an
  embedded `sipmesh serve` and, with two registrar processes behind one edge, by the
  registrar that did not accept it first (nonce counts shared in Redis).
- Two registrar processes, each behind its own edge, handle REGISTERs for one AOR at
  the same time; the location store ends with exactly the bindings the last request
  of each contact defines (RFC 3261 §10.3 step 7 applied atomically per AOR).
- With ``db_mode: write-through`` stopping every registrar and restarting Redis empty
  loses no binding: the registrars load the ``location`` table at start and the
  router's lookup reaches a registered contact.

The user agents are small synchronous UDP clients (one socket each, RFC 3261 §17.1.2
retransmissions of the same bytes); concurrency is threads. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.digest import DigestChallenge, build_credentials
from sipmesh.sip.stateless import make_response
from sipmesh.state.testing import ServerProcess, nats_server, redis_server
from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process

DOMAIN = "sipmesh.test"
PASSWORD = "reg-secret"
EXPIRES = 600

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres, pytest.mark.nats]


# -- a small UDP user agent ------------------------------------------------------------


class UdpUA:
    """One UA on its own UDP socket: REGISTERs with one Call-ID and growing CSeq."""

    def __init__(self, user: str, password: str = PASSWORD) -> None:
        self.user, self.password = user, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.challenge: DigestChallenge | None = None
        self.nc = 0
        self.requests: list[Request] = []

    @property
    def aor(self) -> str:
        return f"{self.user}@{DOMAIN}"

    def contact(self, line: int = 0) -> str:
        """A contact of this UA; distinct lines are distinct bindings of one AOR."""
        return f"sip:{self.user}-{line}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def _via(self) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport"

    def build_register(
        self,
        contacts: Sequence[tuple[str, int]] = (),
        *,
        authorization: str | None = None,
    ) -> Request:
        """A REGISTER (new branch, CSeq + 1) binding each (contact, expires)."""
        self.cseq += 1
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.aor}>;tag={self.tag}"),
            ("To", f"<sip:{self.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
        ]
        headers += [("Contact", f"<{uri}>;expires={exp}") for uri, exp in contacts]
        if authorization is not None:
            headers.append(("Authorization", authorization))
        headers.append(("Content-Length", "0"))
        return Request("REGISTER", f"sip:{DOMAIN}", headers)

    def credentials(self, challenge: DigestChallenge) -> str:
        """An Authorization for the next nonce count (the Request-URI is sip:DOMAIN)."""
        self.nc += 1
        creds = build_credentials(
            challenge,
            username=self.user,
            password=self.password,
            method="REGISTER",
            uri=f"sip:{DOMAIN}",
            nc=self.nc,
        )
        return creds.to_header()

    def transact(self, request: Request, edge: tuple[str, int], timeout: float = 10) -> Response:
        """Send over UDP, retransmit (T1 doubling, §17.1.2.2), return the final response."""
        data = bytes(request)
        seq = request.cseq.seq
        deadline = time.monotonic() + timeout
        interval = 0.5
        self.sock.sendto(data, edge)
        next_send = time.monotonic() + interval
        while (now := time.monotonic()) < deadline:
            self.sock.settimeout(max(0.01, min(next_send, deadline) - now))
            try:
                raw, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                interval = min(interval * 2, 4.0)
                next_send = time.monotonic() + interval
                self.sock.sendto(data, edge)
                continue
            message = parse_message(raw)
            if (
                isinstance(message, Response)
                and message.status >= 200
                and message.call_id == request.call_id
                and message.cseq.seq == seq
            ):
                return message
            if isinstance(message, Response) and message.call_id == request.call_id:
                next_send = deadline  # provisional: the edge has it (§17.1.2.2)
        raise TimeoutError(f"{self.user}: no final response to CSeq {seq} from {edge}")

    def register(self, edge: tuple[str, int], contacts: Sequence[tuple[str, int]] = ()) -> Response:
        """REGISTER answering a 401 (reusing the last nonce with the next nc, §22.4)."""
        for _ in range(3):
            authorization = None
            if self.challenge is not None:
                authorization = self.credentials(self.challenge)
            request = self.build_register(contacts, authorization=authorization)
            self.requests.append(request)
            response = self.transact(request, edge)
            if response.status != 401:
                return response
            self.challenge = pick_challenge(response)
            self.nc = 0
        return response

    def serve_one(self, method: str, timeout: float = 10) -> Request:
        """Wait for a ``method`` request on the contact and answer it 200."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            raw, source = self.sock.recvfrom(65535)
            message = parse_message(raw)
            if isinstance(message, Request) and message.method == method:
                self.sock.sendto(bytes(make_response(message, 200)), source)
                return message
        raise TimeoutError(f"{self.user}: no {method} within {timeout}s")


def pick_challenge(response: Response) -> DigestChallenge:
    """The first WWW-Authenticate (the registrar lists SHA-256, then MD5)."""
    values = response.get_all("WWW-Authenticate")
    assert values, f"a {response.status} without a challenge"
    return DigestChallenge.parse(values[0])


def contacts_of(response: Response) -> set[str]:
    """The contact URIs a 200 to REGISTER lists."""
    out = set()
    for value in response.get_all("Contact"):
        match = re.search(r"<([^>]+)>", value)
        out.add(match.group(1) if match else value.split(";", 1)[0])
    return out


# -- deployments -------------------------------------------------------------------------


async def _admin_sql(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def own_db(postgres_admin_url: str, unique_prefix: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone (its location table starts empty)."""
    name = f"sipmesh_{unique_prefix}"
    asyncio.run(_admin_sql(postgres_admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(
            _admin_sql(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )


@pytest.fixture
def private_redis() -> Iterator[ServerProcess]:
    """A redis-server of this test (no persistence): it can be killed and restarted."""
    server = redis_server(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[ServerProcess]:
    server = nats_server(free_port(), tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Cluster:
    """Registrar processes and edge,router processes sharing one state."""

    env: dict[str, str]
    registrars: list[SipmeshProcess] = field(default_factory=list)
    edges: list[SipmeshProcess] = field(default_factory=list)

    def start(self, procs: Sequence[SipmeshProcess]) -> None:
        """Start (or restart, on the same ports) and wait until every one is ready."""
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()

    def launch(self, workdir: Path, *, edge_per_registrar: bool = False) -> None:
        """Two registrars, then one edge,router for both or one for each."""
        self._start_new(
            [partial(registrar_process, workdir, f"registrar{i}", self.env) for i in (1, 2)],
            self.registrars,
        )
        if edge_per_registrar:
            edges = [
                partial(edge_process, workdir, f"edge{i}", self.env, [r])
                for i, r in enumerate(self.registrars, 1)
            ]
        else:
            edges = [partial(edge_process, workdir, "edge", self.env, list(self.registrars))]
        self._start_new(edges, self.edges)

    @staticmethod
    def _start_new(
        makers: Sequence[Callable[[], SipmeshProcess]], into: list[SipmeshProcess]
    ) -> None:
        """Start new processes; one whose fresh port was taken meanwhile (other tests
        run on this machine too) is made again with other ports (bounded)."""
        procs = [make() for make in makers]
        into.extend(procs)
        for proc in procs:
            proc.start()
        for index, make in enumerate(makers):
            for attempt in range(3):
                try:
                    into[index - len(makers)].wait_ready()
                    break
                except RuntimeError as exc:
                    if "Address already in use" not in str(exc) or attempt == 2:
                        raise
                    into[index - len(makers)] = make()
                    into[index - len(makers)].start()

    def stop(self) -> None:
        for proc in [*self.edges, *self.registrars]:
            try:
                proc.stop()
            except Exception:  # a hung process is killed; the test already failed
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in [*self.edges, *self.registrars])


def registrar_process(workdir: Path, name: str, env: dict[str, str]) -> SipmeshProcess:
    return make_process(
        name, workdir, targets="registrar", transports=(), env=env, extra_args=["--domain", DOMAIN]
    )


def edge_process(
    workdir: Path, name: str, env: dict[str, str], registrars: Sequence[SipmeshProcess]
) -> SipmeshProcess:
    endpoints = ",".join(f"127.0.0.1:{r.grpc_port}" for r in registrars)
    return make_process(
        name,
        workdir,
        targets="edge,router",
        transports=("udp",),
        # Every UA here sends from 127.0.0.1: pike's per-source limit would ban it.
        env={**env, "SIPMESH_ENDPOINTS__REGISTRAR": endpoints, "SIPMESH_EDGE__ANTIFLOOD": "false"},
        extra_args=["--domain", DOMAIN],
    )


def provision(db_url: str, *users: str) -> None:
    for user in users:
        ctl("--db", db_url, "add", f"{user}@{DOMAIN}", PASSWORD)


def metric(proc: SipmeshProcess, name: str, labels: str = "") -> float:
    """The value of one sample of the process's /metrics (0 when absent)."""
    wanted = name + (f"{{{labels}}}" if labels else "")
    for line in proc.metrics().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def ul_show(db_url: str, state: str | None, aor: str = "") -> list[dict[str, object]]:
    """`sipmesh ctl [--state …] --json ul show [AOR]`: the store's (or table's) bindings."""
    args = ["--db", db_url] + (["--state", state] if state else [])
    out = ctl(*args, "--json", "ul", "show", *([aor] if aor else []), check=False)
    return list(json.loads(out)) if out.strip() else []


def edge_addr(proc: SipmeshProcess) -> tuple[str, int]:
    return ("127.0.0.1", proc.sip_port)


# -- 1. a replayed nonce count -------------------------------------------------------------


def register_then_replay(ua: UdpUA, edge: tuple[str, int]) -> tuple[Request, Response]:
    """401, 200 with nc=00000001, then the same Authorization on a new REGISTER.

    The replay asks to remove the binding (Expires 0): if it were accepted, the
    binding would be gone. Returns the replay and its response.
    """
    first = ua.build_register([(ua.contact(), EXPIRES)])
    challenged = ua.transact(first, edge)
    assert challenged.status == 401, challenged.status
    challenge = pick_challenge(challenged)
    authorization = ua.credentials(challenge)
    assert "nc=00000001" in authorization
    accepted = ua.transact(
        ua.build_register([(ua.contact(), EXPIRES)], authorization=authorization), edge
    )
    assert accepted.status == 200, accepted
    assert contacts_of(accepted) == {ua.contact()}
    replay = ua.build_register([(ua.contact(), 0)], authorization=authorization)
    return replay, ua.transact(replay, edge)


def still_bound(ua: UdpUA, edge: tuple[str, int]) -> set[str]:
    """A fresh, correctly authenticated query REGISTER: the contacts now bound."""
    ua.challenge = None
    response = ua.register(edge)
    assert response.status == 200, response
    return contacts_of(response)


def _assert_replay_refused(replay: Response, first_nonce: str, expect: int) -> None:
    assert replay.status == expect, f"replay answered {replay.status}"
    if expect == 401:
        # docs/registrar.md: a wrong Authorization gets a new challenge (the default).
        fresh = pick_challenge(replay)
        assert fresh.nonce != first_nonce, "the new challenge carries a new nonce"


@pytest.mark.parametrize(("reply", "expect"), [("challenge", 401), ("forbidden", 403)])
def test_replayed_nonce_count_is_refused_by_sipmesh_serve(
    workdir: Path, reply: str, expect: int
) -> None:
    proc = make_process(
        "embedded",
        workdir,
        targets="edge,router,registrar",
        transports=("udp",),
        env={"SIPMESH_REGISTRAR__WRONG_CREDENTIALS_REPLY": reply},
        extra_args=["--domain", DOMAIN],
    )
    provision(proc.env["SIPMESH_DB"], "alice")
    ua = UdpUA("alice")
    proc.start()
    try:
        proc.wait_ready()
        edge = edge_addr(proc)
        replay, answer = register_then_replay(ua, edge)
        nonce = re.search(r'nonce="([^"]+)"', replay.get("Authorization") or "")
        assert nonce is not None
        _assert_replay_refused(answer, nonce.group(1), expect)
        assert metric(proc, "sipmesh_auth_failures_total", 'reason="replay"') == 1
        assert still_bound(ua, edge) == {ua.contact()}, "the replayed removal did nothing"
    finally:
        ua.close()
        assert proc.stop() == 0, proc.log()


def test_replay_is_refused_by_the_other_registrar_process(
    workdir: Path, redis_url: str, own_db: str, nats_url: str, unique_prefix: str
) -> None:
    """Two registrars behind one edge: the nonce count one accepted, the other refuses."""
    env = {
        "SIPMESH_STATE": redis_url,
        "SIPMESH_DB": own_db,
        "SIPMESH_BUS": nats_url,
        "SIPMESH_NAMESPACE": unique_prefix,  # keys and subjects of this test only
    }
    provision(own_db, "bob")
    cluster = Cluster(env)
    ua = UdpUA("bob")
    try:
        cluster.launch(workdir)
        edge = edge_addr(cluster.edges[0])
        replay, answer = register_then_replay(ua, edge)
        nonce = re.search(r'nonce="([^"]+)"', replay.get("Authorization") or "")
        assert nonce is not None
        _assert_replay_refused(answer, nonce.group(1), 401)
        accepted = [metric(r, "sipmesh_accepted_regs_total") for r in cluster.registrars]
        assert sorted(accepted) == [0.0, 1.0], accepted
        other = cluster.registrars[accepted.index(0.0)]
        # The edge spreads calls round-robin: replay (always refused) until one
        # reached the registrar that did not accept the original (bounded).
        for _ in range(6):
            if metric(other, "sipmesh_auth_failures_total", 'reason="replay"') > 0:
                break
            again = ua.build_register(
                [(ua.contact(), 0)], authorization=replay.get("Authorization")
            )
            _assert_replay_refused(ua.transact(again, edge), nonce.group(1), 401)
        assert metric(other, "sipmesh_auth_failures_total", 'reason="replay"') > 0, cluster.logs()
        assert sum(metric(r, "sipmesh_accepted_regs_total") for r in cluster.registrars) == 1
        assert still_bound(ua, edge) == {ua.contact()}, "no replayed removal was applied"
    finally:
        ua.close()
        cluster.stop()


# -- 2. concurrent REGISTERs for one AOR on two registrars -------------------------------


def _plan(index: int, steps: int) -> list[list[tuple[int, int]]]:
    """The REGISTERs of UA ``index``: (line, expires) per request; 0 removes.

    Intermediate steps are random (seeded); the last one fixes the final state:
    line 0 stays bound for even UAs, line 1 for every third UA.
    """
    rng = random.Random(index)
    plan = []
    for _ in range(steps - 1):
        lines = rng.choice([[0], [1], [0, 1]])
        plan.append([(line, rng.choice([EXPIRES, EXPIRES, 0])) for line in lines])
    plan.append([(0, EXPIRES if index % 2 == 0 else 0), (1, EXPIRES if index % 3 == 0 else 0)])
    return plan


def test_concurrent_registers_on_two_registrars_leave_the_last_bindings(
    workdir: Path, own_db: str, private_redis: ServerProcess, private_nats: ServerProcess
) -> None:
    redis = f"redis://127.0.0.1:{private_redis.port}/0"
    env = {
        "SIPMESH_STATE": redis,
        "SIPMESH_DB": own_db,
        "SIPMESH_BUS": f"nats://127.0.0.1:{private_nats.port}",
        "SIPMESH_REGISTRAR__DB_MODE": "write-through",
    }
    provision(own_db, "carol")
    cluster = Cluster(env)
    uas = [UdpUA("carol") for _ in range(10)]
    plans = [_plan(i, 12) for i in range(len(uas))]
    start = threading.Barrier(len(uas))

    def run(index: int) -> list[int]:
        ua = uas[index]
        start.wait(timeout=30)
        statuses = []
        for step, lines in enumerate(plans[index]):
            edge = edge_addr(cluster.edges[(index + step) % 2])
            response = ua.register(edge, [(ua.contact(line), exp) for line, exp in lines])
            statuses.append(response.status)
        return statuses

    try:
        cluster.launch(workdir, edge_per_registrar=True)
        with ThreadPoolExecutor(len(uas)) as pool:
            results = list(pool.map(run, range(len(uas)), timeout=90))
        for index, statuses in enumerate(results):
            assert statuses == [200] * len(plans[index]), (index, statuses, cluster.logs())
        expected = {
            ua.contact(line)
            for ua, plan in zip(uas, plans, strict=True)
            for line in (0, 1)
            if [exp for lines in plan for ln, exp in lines if ln == line][-1] > 0
        }
        assert expected, "the plans leave some bindings"
        store = ul_show(own_db, redis, f"carol@{DOMAIN}")
        assert sorted(str(b["contact"]) for b in store) == sorted(expected)
        # write-through: the location table holds the same bindings as the store.
        table = ul_show(own_db, None, f"carol@{DOMAIN}")
        assert sorted(str(b["contact"]) for b in table) == sorted(expected)
        for registrar in cluster.registrars:
            assert metric(registrar, "sipmesh_accepted_regs_total") > 0, "both did work"
    finally:
        for ua in uas:
            ua.close()
        cluster.stop()


# -- 3. every registrar and Redis restarted, write-through -------------------------------


def test_write_through_bindings_survive_restart_of_registrars_and_redis(
    workdir: Path, own_db: str, private_redis: ServerProcess, private_nats: ServerProcess
) -> None:
    redis = f"redis://127.0.0.1:{private_redis.port}/0"
    env = {
        "SIPMESH_STATE": redis,
        "SIPMESH_DB": own_db,
        "SIPMESH_BUS": f"nats://127.0.0.1:{private_nats.port}",
        "SIPMESH_REGISTRAR__DB_MODE": "write-through",
    }
    users = [f"user{i}" for i in range(5)]
    provision(own_db, *users, "caller")
    cluster = Cluster(env)
    uas = [UdpUA(user) for user in users]
    caller = UdpUA("caller")
    try:
        cluster.launch(workdir)
        edge = edge_addr(cluster.edges[0])
        for ua in uas:
            response = ua.register(edge, [(ua.contact(), EXPIRES)])
            assert response.status == 200, response
        expected = sorted((ua.aor, ua.contact()) for ua in uas)
        before = ul_show(own_db, redis)
        assert sorted((str(b["aor"]), str(b["contact"])) for b in before) == expected

        for registrar in cluster.registrars:
            assert registrar.stop() == 0, registrar.log()
        private_redis.stop()
        private_redis.start()  # empty: no RDB, no AOF
        assert ul_show(own_db, redis) == [], "Redis restarted without the bindings"
        cluster.start(cluster.registrars)  # they load the location table

        after = ul_show(own_db, redis)
        assert sorted((str(b["aor"]), str(b["contact"])) for b in after) == expected
        for binding in after:
            assert 0 < int(str(binding["expires_in"])) <= EXPIRES

        # The router's lookup (through a restarted registrar) reaches the contact.
        target = uas[0]
        answered = ThreadPoolExecutor(1)
        received = answered.submit(target.serve_one, "OPTIONS", 45)
        # The edge's streams to the registrars reconnect with backoff: until then
        # the router answers 503 (bounded).
        deadline = time.monotonic() + 30
        response = options_through(caller, edge, f"sip:{target.aor}")
        while response.status == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            response = options_through(caller, edge, f"sip:{target.aor}")
        assert response.status == 200, (bytes(response), cluster.logs())
        got = received.result(timeout=45)
        answered.shutdown()
        assert got.uri == target.contact()
    finally:
        for ua in [*uas, caller]:
            ua.close()
        cluster.stop()


def options_through(caller: UdpUA, edge: tuple[str, int], uri: str) -> Response:
    """OPTIONS to ``uri`` through the edge, answering a 407 (RFC 3261 §22.3)."""
    call_id = f"{secrets.token_hex(8)}@127.0.0.1"
    proxy_auth: list[tuple[str, str]] = []
    for seq in (1, 2, 3):
        headers = [
            ("Via", caller._via()),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{caller.aor}>;tag={caller.tag}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} OPTIONS"),
            *proxy_auth,
            ("Content-Length", "0"),
        ]
        response = caller.transact(Request("OPTIONS", uri, headers), edge, timeout=15)
        if response.status not in (401, 407):
            return response
        name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
        challenge = DigestChallenge.parse(response.get_all(name)[0])
        creds = build_credentials(
            challenge, username=caller.user, password=caller.password, method="OPTIONS", uri=uri
        )
        header = "Proxy-Authorization" if response.status == 407 else "Authorization"
        proxy_auth = [(header, creds.to_header())]
    return response


def test_registrar_started_after_a_redis_restart_shares_the_nonce_secret(
    workdir: Path, own_db: str, private_redis: ServerProcess, private_nats: ServerProcess
) -> None:
    """Redis restarted empty, then one registrar restarted while the other runs on.

    The nonce secret lives in the key/value store (docs/registrar.md): the restarted
    registrar must not sign with a secret the running one does not know, or a
    challenge from one and its answer on the other never match (RFC 7616 §3.3).
    """
    redis = f"redis://127.0.0.1:{private_redis.port}/0"
    env = {
        "SIPMESH_STATE": redis,
        "SIPMESH_DB": own_db,
        "SIPMESH_BUS": f"nats://127.0.0.1:{private_nats.port}",
        "SIPMESH_REGISTRAR__DB_MODE": "write-through",
        "SIPMESH_REGISTRAR__TIMER_INTERVAL": "0.5",
    }
    users = [f"dan{i}" for i in range(4)]
    provision(own_db, *users)
    cluster = Cluster(env)
    uas = [UdpUA(user) for user in users]
    try:
        cluster.launch(workdir)
        edge = edge_addr(cluster.edges[0])
        assert uas[0].register(edge, [(uas[0].contact(), EXPIRES)]).status == 200
        private_redis.stop()
        private_redis.start()
        first = cluster.registrars[0]
        assert first.stop() == 0, first.log()
        cluster.start([first])
        # Until the edge's stream to the restarted registrar is up again, everything
        # goes to the other one: challenge (unauthenticated REGISTERs) until both answer.
        probe = UdpUA(users[0])
        deadline = time.monotonic() + 30
        try:
            while metric(first, "sipmesh_auth_challenges_total") == 0:
                assert time.monotonic() < deadline, cluster.logs()
                probe.transact(probe.build_register(), edge)
        finally:
            probe.close()
        # Both registrars answer in turn (round-robin); each UA gets a challenge from
        # one and (often) sends its answer to the other. Bounded: a few rounds.
        statuses: list[int] = []
        for ua in uas[1:]:
            ua.challenge = None
            status = ua.register(edge, [(ua.contact(), EXPIRES)]).status
            while status == 503 and time.monotonic() < deadline:  # streams reconnecting
                time.sleep(0.5)
                status = ua.register(edge, [(ua.contact(), EXPIRES)]).status
            statuses.append(status)
        assert statuses == [200] * len(statuses), (statuses, cluster.logs())
    finally:
        for ua in uas:
            ua.close()
        cluster.stop()


def test_restarted_registrar_does_not_bring_back_a_removed_binding(
    workdir: Path, own_db: str, private_redis: ServerProcess, private_nats: ServerProcess
) -> None:
    """write-back: the table lags the store; a registrar (re)started while Redis keeps
    the live bindings must not load the lagging table over them."""
    redis = f"redis://127.0.0.1:{private_redis.port}/0"
    env = {
        "SIPMESH_STATE": redis,
        "SIPMESH_DB": own_db,
        "SIPMESH_BUS": f"nats://127.0.0.1:{private_nats.port}",
        "SIPMESH_REGISTRAR__DB_MODE": "write-back",
        "SIPMESH_REGISTRAR__TIMER_INTERVAL": "3600",  # flushed only at stop
    }
    provision(own_db, "frank")
    cluster = Cluster(env)
    ua = UdpUA("frank")
    aor = f"frank@{DOMAIN}"
    try:
        cluster.launch(workdir, edge_per_registrar=True)
        one, two = cluster.registrars
        bound = ua.register(edge_addr(cluster.edges[0]), [(ua.contact(0), EXPIRES)])
        assert bound.status == 200, bound
        assert one.stop() == 0, one.log()  # write-back flushes at stop: the row is in
        assert [b["contact"] for b in ul_show(own_db, None, aor)] == [ua.contact(0)]
        # Removed through the other registrar: the store has it gone, the table not yet.
        ua.challenge = None
        removed = ua.register(edge_addr(cluster.edges[1]), [(ua.contact(0), 0)])
        assert removed.status == 200, removed
        assert not contacts_of(removed)
        cluster.start([one])
        assert ul_show(own_db, redis, aor) == [], "the removed binding stays removed"
        assert two.stop() == 0, two.log()  # its flush brings the table in line
        assert ul_show(own_db, None, aor) == []
    finally:
        ua.close()
        cluster.stop()


def test_ctl_ul_show_reads_the_namespace_of_the_installation(
    redis_url: str, own_db: str, unique_prefix: str
) -> None:
    from sipmesh.state.location import Binding
    from sipmesh.state.location_redis import RedisLocationStore
    from sipmesh.state.redis_common import make_redis_client

    aor, contact = f"erin@{DOMAIN}", "sip:erin@127.0.0.1:5099"

    async def bind() -> None:
        store = RedisLocationStore(make_redis_client(redis_url), prefix=unique_prefix + ":")
        try:
            now = time.time()
            binding = Binding(aor=aor, contact=contact, expires_at=now + EXPIRES, call_id="c")
            await store.update(aor, lambda current: [*current, binding])
        finally:
            await store.close()

    asyncio.run(bind())
    out = ctl(
        "--db", own_db, "--state", redis_url, "--json", "ul", "show", aor,
        env={"SIPMESH_NAMESPACE": unique_prefix},
        check=False,
    )  # fmt: skip
    assert [b["contact"] for b in json.loads(out or "[]")] == [contact]
