"""The systems under test: Kamailio, sipmesh embedded, sipmesh split.

Each ``System`` starts its processes, names the SIP address sipp talks to, and
lists the processes whose CPU counts. Users are provisioned before the start:
sipmesh through ``sipmesh ctl add-bulk`` (one executemany), Kamailio through a
db_text subscriber file with the same HA1 values.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.lib.procs import REPO, Proc, base_env, free_port, run_ctl, sipmesh_proc

__all__ = ["System", "free_port", "start_embedded", "start_kamailio", "start_split"]

KAMAILIO = "/usr/sbin/kamailio"
KAMAILIO_CFG = REPO / "bench" / "kamailio" / "kamailio.cfg"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
KAMAILIO_SQLITE_SCHEMA = Path("/usr/share/kamailio/db_sqlite")
DBTEXT_TEMPLATE = Path("/usr/share/kamailio/dbtext/kamailio")
REDIS_URL = "redis://127.0.0.1:6379/14"  # a Redis database of the benchmark's own
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "sipmesh_bench"
NATS_URL = "nats://127.0.0.1:4222"


@dataclass
class System:
    name: str
    procs: list[Proc] = field(default_factory=list)
    sip_port: int = 0

    @property
    def remote(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def cpu(self) -> dict[str, float]:
        return {p.name: p.cpu() for p in self.procs}

    def peak_mb(self) -> float:
        return sum(p.peak_kb() for p in self.procs) / 1024

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def users(count: int) -> list[str]:
    return [f"u{i}" for i in range(count)]


def write_bulk_file(path: Path, names: list[str], domain: str, password: str) -> Path:
    path.write_text("".join(f"{n}@{domain} {password}\n" for n in names))
    return path


def _ha1s(name: str, domain: str, password: str) -> tuple[str, str]:
    # RFC 2617 §3.2.2.2 HA1 = MD5(user:realm:password); HA1B with user@domain.
    ha1 = hashlib.md5(f"{name}:{domain}:{password}".encode()).hexdigest()
    ha1b = hashlib.md5(f"{name}@{domain}:{domain}:{password}".encode()).hexdigest()
    return ha1, ha1b


def kamailio_has_sqlite() -> bool:
    return (KAMAILIO_MODULES / "db_sqlite.so").exists()


def write_kamailio_db(path: Path, names: list[str], domain: str, password: str) -> str:
    """Kamailio's subscriber table (auth_db reads HA1): SQLite, else db_text."""
    if not kamailio_has_sqlite():
        return _write_dbtext(path.with_suffix(".dbtext"), names, domain, password)
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, "
            "table_version INTEGER DEFAULT 0 NOT NULL)"
        )
        con.executescript((KAMAILIO_SQLITE_SCHEMA / "auth_db-create.sql").read_text())
        con.executemany(
            "INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES (?,?,?,?,?)",
            [(n, domain, password, *_ha1s(n, domain, password)) for n in names],
        )
    con.close()
    # db_sqlite drops "sqlite:///" itself: an absolute path needs a fourth slash.
    return f"sqlite:///{path}"


def _write_dbtext(dirpath: Path, names: list[str], domain: str, password: str) -> str:
    dirpath.mkdir(parents=True, exist_ok=True)
    shutil.copy(DBTEXT_TEMPLATE / "version", dirpath / "version")
    lines = [
        "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) "
    ]
    for i, n in enumerate(names, 1):
        ha1, ha1b = _ha1s(n, domain, password)
        lines.append(f"{i}:{n}:{domain}:{password}:{ha1}:{ha1b}")
    (dirpath / "subscriber").write_text("\n".join(lines) + "\n")
    return f"text://{dirpath}"


def start_kamailio(workdir: Path, dburl: str, domain: str, auth: bool) -> System:
    port = free_port()
    cores = os.cpu_count() or 1
    cmd = [KAMAILIO, "-DD", "-E", "-f", str(KAMAILIO_CFG), "-n", str(cores)]
    cmd += ["-l", f"udp:127.0.0.1:{port}", "-m", "512", "-M", "32", "-Y", str(workdir)]
    cmd += ["-w", str(workdir), "-A", f'DBURL="{dburl}"', "-A", f'BENCH_DOMAIN="{domain}"']
    if auth:
        cmd += ["-A", "WITH_AUTH"]
    if dburl.startswith("text://"):
        cmd += ["-A", "WITH_DBTEXT"]
    proc = Proc("kamailio", cmd, dict(os.environ), workdir / "kamailio.log")
    proc.start()
    proc.wait_ready(sip_port=port)
    return System("kamailio", [proc], port)


def provision_sipmesh(db_url: str, bulk: Path) -> None:
    run_ctl(["--db", db_url, "add-bulk", str(bulk)])


def start_embedded(workdir: Path, db_url: str, domain: str, auth: bool) -> System:
    port = free_port()
    flag = str(auth).lower()
    # Authentication off: the router script (WITH_AUTH) and the registrar both.
    env = {
        "SIPMESH_DB": db_url,
        "SIPMESH_ROUTER__FEATURES__AUTH": flag,
        "SIPMESH_REGISTRAR__AUTH_REGISTER": flag,
    }
    proc = sipmesh_proc(
        "sipmesh", workdir, targets="edge,router,registrar", sip_port=port, domain=domain, env=env
    )
    proc.start()
    proc.wait_ready()
    return System("sipmesh embedded", [proc], port)


def reset_pg() -> str:
    """A fresh PostgreSQL database for split mode; returns its URL."""
    for sql in (
        f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)",
        f"CREATE DATABASE {PG_BENCH_DB}",
    ):
        subprocess.run(
            ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", sql],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return f"postgresql://postgres@127.0.0.1:5432/{PG_BENCH_DB}"


def start_split(
    workdir: Path, pg_url: str, domain: str, *, edges: int = 1, routers: int = 1
) -> System:
    """Registrar, router(s) and edge(s) as separate processes on Redis/PostgreSQL/NATS.

    With two edges both bind the same UDP port with SO_REUSEPORT (edge.reuse_port):
    the kernel spreads sipp's datagrams over them by source address hash.
    """
    shared = {"SIPMESH_STATE": REDIS_URL, "SIPMESH_DB": pg_url, "SIPMESH_BUS": NATS_URL}
    registrar = sipmesh_proc(
        "registrar", workdir, targets="registrar", sip_port=None, domain=domain, env=shared
    )
    registrar.start()
    registrar.wait_ready()
    reg_ep = f"127.0.0.1:{registrar.extra['grpc']}"
    procs = [registrar]
    router_eps = []
    for i in range(routers):
        router = sipmesh_proc(
            f"router{i + 1}",
            workdir,
            targets="router",
            sip_port=None,
            domain=domain,
            env={**shared, "SIPMESH_ENDPOINTS__REGISTRAR": reg_ep},
        )
        router.start()
        procs.append(router)
        router_eps.append(f"127.0.0.1:{router.extra['grpc']}")
    for router in procs[1:]:
        router.wait_ready()
    port = free_port()
    edge_env = {
        **shared,
        "SIPMESH_ENDPOINTS__REGISTRAR": reg_ep,
        "SIPMESH_ENDPOINTS__ROUTER": ",".join(router_eps),
        "SIPMESH_EDGE__REUSE_PORT": "true" if edges > 1 else "false",
    }
    for i in range(edges):
        edge = sipmesh_proc(
            f"edge{i + 1}", workdir, targets="edge", sip_port=port, domain=domain, env=edge_env
        )
        edge.start()
        procs.append(edge)
    for edge in procs[1 + routers :]:
        edge.wait_ready()
    return System(f"sipmesh split {edges}e/{routers}r", procs, port)


def env_for_ctl() -> dict[str, str]:
    return base_env()
