"""Two regions on loopback (issue 12, item 5; docs/deployment.md, "Multi-region").

Each region is the compose topology's registrar, two routers and two edges as local
processes (tests/cluster/harness.py) with its own Redis (a private redis-server), its
own PostgreSQL database and its own nats-server; the two NATS servers are joined by a
leaf-node connection (region B's server is a leaf of region A's), each with its own
JetStream domain. Each region runs in its own namespace (SIPMESH_NAMESPACE), so only
the shared inter-region subject (regions.subject) means anything across the link.

- alice registers in region A; the replicator of A announces it, B indexes it;
- bob, a user of region B, calls alice through B's edge: B's router misses locally,
  finds alice's home region in the remote index and relays to A's edge, which trusts
  B's edges (WITH_IPAUTH, address table) and delivers to alice; the call completes;
- region A disappears entirely (processes, Redis, NATS SIGKILLed): region B keeps
  registering its users and completing its local calls.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sipmesh.state.testing import ServerProcess, redis_server, wait_port
from tests.cluster.harness import Backends, Cluster, free_port
from tests.cluster.sippload import SippRun, inject, sipp_client
from tests.cluster.sipua import UA
from tests.e2e.procs import ctl
from tests.e2e.sipp import SCENARIOS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sipp,
    pytest.mark.postgres,
    pytest.mark.slow,
    # Two regions of five processes each, their servers, sipp, graceful stops.
    pytest.mark.timeout(300),
]

DOMAIN = "localhost"
CORE = ("registrar", "router", "edge-1", "edge-2")
USERS = ("alice", "bob", "carol", "dave")
NATS = "/usr/sbin/nats-server"


def password(user: str) -> str:
    return f"{user}-pw"


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def region_dbs(postgres_admin_url: str) -> Iterator[dict[str, str]]:
    names = {r: f"sipmesh_region_{r}_{secrets.token_hex(4)}" for r in ("a", "b")}
    parts = urlsplit(postgres_admin_url)
    for name in names.values():
        asyncio.run(_admin(postgres_admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield {
            r: urlunsplit((parts.scheme, parts.netloc, "/" + n, "", "")) for r, n in names.items()
        }
    finally:
        for name in names.values():
            asyncio.run(
                _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )


def nats_server(workdir: Path, region: str, port: int, leaf: str) -> ServerProcess:
    """A nats-server with JetStream in its own domain; `leaf` is its leafnodes block."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"nats-{region}.conf"
    store = workdir / f"js-{region}"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"server_name: region-{region}\n"
        f'jetstream {{ store_dir: "{store}", domain: {region} }}\n'
        f"leafnodes {{ {leaf} }}\n"
    )
    return ServerProcess([NATS, "-c", str(conf)], port)


def low_free_port() -> int:
    """A loopback port below 32768 free for both UDP and TCP."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port below 32768")


class Region:
    """One region: its servers and its compose services as processes."""

    def __init__(self, name: str, workdir: Path, db: str) -> None:
        self.name = name
        self.redis = redis_server(free_port())
        self.nats_port = free_port()
        self.cluster = Cluster(
            workdir=workdir / f"region-{name}",
            backends=Backends(
                state=f"redis://127.0.0.1:{self.redis.port}/0",
                db=db,
                bus=f"nats://127.0.0.1:{self.nats_port}",
            ),
        )
        self.cluster.plan()
        # Kamailio's address.port is a SMALLINT: the edges the peer region trusts by
        # source port must listen below 32768 (ephemeral ports are above).
        for index in (1, 2):
            edge = self.cluster.instance(f"edge-{index}")
            port = low_free_port()
            edge.env["SIPMESH_LISTEN"] = f"udp:127.0.0.1:{port},tcp:127.0.0.1:{port}"
        self.nats: ServerProcess | None = None

    def edge_port(self, index: int) -> int:
        return self.cluster.instance(f"edge-{index}").sip_port("udp")

    def configure(self, peer: Region) -> None:
        """The region's settings, on top of the compose environment."""
        for instance in self.cluster.all_instances():
            instance.env.update(
                {
                    "SIPMESH_NAMESPACE": f"sipmesh_{self.name}",
                    "SIPMESH_REGIONS__NAME": self.name,
                    "SIPMESH_REGIONS__REPLICATE": "true",
                    "SIPMESH_REGIONS__ADDRESS": f"127.0.0.1:{self.edge_port(1)}",
                    "SIPMESH_REGIONS__PEERS": peer.name,
                    # Trust the peer region's edges (address table, below).
                    "SIPMESH_ROUTER__FEATURES__IPAUTH": "true",
                    # Every UA of the test is sipp or tests/cluster/sipua.py on 127.0.0.1.
                    "SIPMESH_EDGE__TRUSTED_SOURCES": "127.0.0.1",
                }
            )

    def provision(self, peer: Region) -> None:
        self.cluster.run_jobs()
        for user in USERS:
            ctl("--db", self.cluster.backends.db, "add", f"{user}@{DOMAIN}", password(user))
        rows = ", ".join(f"(1, '127.0.0.1', 32, {peer.edge_port(i)}, 'region-{peer.name}')"
                         for i in (1, 2))  # fmt: skip
        sql = f"INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES {rows}"
        asyncio.run(_admin(self.cluster.backends.db, sql))

    def start(self) -> None:
        self.cluster.start(only=CORE)
        print(f"\nregion {self.name}:\n{self.cluster.report()}")
        for name in CORE:
            for instance in self.cluster.instances[name]:
                assert instance.status == "running", self.cluster.report() + instance.log()

    def kill(self) -> None:
        for instance in self.cluster.all_instances():
            if instance.alive():
                self.cluster.kill(instance.service, instance.index)
        if self.nats is not None:
            self.nats.stop()
        self.redis.stop()

    def index_entries(self) -> list[str]:
        import redis

        client = redis.Redis(port=self.redis.port)
        try:
            return [k.decode() for k in client.scan_iter(match=f"sipmesh_{self.name}:regions:*")]
        finally:
            client.close()


def sipp_call(workdir: Path, name: str, port: int, caller: str, callee: str) -> SippRun:
    run = sipp_client(
        name,
        workdir,
        f"127.0.0.1:{port}",
        SCENARIOS / "call_auth.xml",
        calls=1,
        rate=1,
        inf=inject(workdir, f"{name}.csv", f"{caller};{DOMAIN};{callee}"),
        user=caller,
        password=password(caller),
        timeout=20,
    )
    return run.start().finish(40)


def numbers(label: str, run: SippRun) -> None:
    print(f"{label}: attempted {run.attempted}, succeeded {run.succeeded}, failed {run.failed}")


def test_user_of_region_a_called_from_region_b_and_b_survives_a(
    tmp_path: Path, region_dbs: dict[str, str]
) -> None:
    a = Region("a", tmp_path, region_dbs["a"])
    b = Region("b", tmp_path, region_dbs["b"])
    leaf_port = free_port()
    a.nats = nats_server(tmp_path, "a", a.nats_port, f"listen: 127.0.0.1:{leaf_port}")
    b.nats = nats_server(
        tmp_path, "b", b.nats_port, f'remotes: [ {{ url: "nats-leaf://127.0.0.1:{leaf_port}" }} ]'
    )
    uas: list[UA] = []
    try:
        for server in (a.redis, a.nats, b.redis, b.nats):
            server.start()
        wait_port(leaf_port)
        a.configure(b)
        b.configure(a)
        a.provision(b)
        b.provision(a)
        a.start()
        b.start()

        # alice registers in region A; B's index learns her home region (the leaf
        # connection may still be coming up: the next REGISTER refresh re-announces).
        for _ in range(10):
            alice = UA(a.edge_port(1), "alice", password("alice"), DOMAIN)
            assert alice.register() == 200
            deadline = time.monotonic() + 2
            while not b.index_entries() and time.monotonic() < deadline:
                time.sleep(0.1)
            if b.index_entries():
                break
            alice.close()
        uas.append(alice.serve())
        print(f"region B's remote index: {b.index_entries()}")
        assert b.index_entries(), b.cluster.instance("registrar").log()
        assert not a.index_entries()  # A never indexes its own users

        # bob (region B) calls alice (region A) through B's edge.
        cross = sipp_call(tmp_path, "b-calls-a", b.edge_port(1), "bob", "alice")
        numbers("call bob (B) -> alice (A)", cross)
        assert cross.succeeded == 1, cross.output() + a.cluster.instance("edge-1").log()
        assert alice.answered["INVITE"] >= 1
        assert alice.answered["BYE"] == 1

        # dave registers in B (to be called after A is gone).
        dave = UA(b.edge_port(2), "dave", password("dave"), DOMAIN)
        assert dave.register() == 200
        uas.append(dave.serve())

        # Region A disappears: its processes, Redis and NATS.
        a.kill()
        time.sleep(1.0)

        # Region B keeps serving its own users: REGISTER and a local call.
        carol = UA(b.edge_port(1), "carol", password("carol"), DOMAIN)
        uas.append(carol)
        assert carol.register() == 200, carol.received
        local = sipp_call(tmp_path, "b-local", b.edge_port(1), "bob", "dave")
        numbers("after region A died: call bob (B) -> dave (B)", local)
        assert local.succeeded == 1, local.output() + b.cluster.instance("edge-1").log()
        assert dave.answered["BYE"] == 1
        # Calls to alice now fail (her home region is gone), quickly and cleanly.
        lost = sipp_call(tmp_path, "b-calls-dead-a", b.edge_port(1), "bob", "alice")
        numbers("after region A died: call bob (B) -> alice (A)", lost)
        assert lost.succeeded == 0
        for instance in b.cluster.all_instances():
            if instance.status == "running":
                assert instance.alive()
                assert instance.ready()[0] == 200, instance.name
    finally:
        for ua in uas:
            ua.close()
        for region in (a, b):
            region.cluster.stop(timeout=20)
            if region.nats is not None:
                region.nats.stop()
            region.redis.stop()
