"""Make PostgreSQL, Redis and NATS (JetStream) reachable for the test suite.

Prints ``export NAME=value`` lines for the shell to evaluate. For each server: a URL
given in ``SIPMESH_TEST_<NAME>_URL`` is used as it is; otherwise the server on its
standard local port is used, started when it is installed but stopped, installed
from Debian's packages when missing (as root), and as a last resort run with
testcontainers when a Docker engine answers. The SIP tools the tests drive (sipp,
sipsak, baresip, kamailio, and chromium for the console test) are installed from
Debian's packages when missing.
Progress goes to stderr.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

APT_UPDATED = False


def say(message: str) -> None:
    print(f"ensure-services: {message}", file=sys.stderr)


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reachable(host, port):
            return True
        time.sleep(0.25)
    return False


def run(*cmd: str) -> bool:
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        say(f"{' '.join(cmd)} failed: {result.stderr.decode(errors='replace').strip()[:300]}")
    return result.returncode == 0


def apt_install(*packages: str) -> bool:
    global APT_UPDATED
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say(f"cannot install {' '.join(packages)}: not root or no apt-get")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not APT_UPDATED:
        subprocess.run(
            ["apt-get", "update", "-qq"],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        APT_UPDATED = True
    say(f"installing {' '.join(packages)}")
    return (
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def docker_available() -> bool:
    return (
        bool(shutil.which("docker"))
        and subprocess.run(
            ["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        ).returncode
        == 0
    )


def start_postgres() -> None:
    if not glob.glob("/etc/postgresql/*/main"):
        apt_install("postgresql")
    for version in (
        sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    ):
        run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")


def start_redis() -> None:
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    run(
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/var/lib/redis",
        "--logfile",
        "/var/log/redis/ci.log",
    )


def start_nats() -> None:
    if not shutil.which("nats-server") and not os.path.exists("/usr/sbin/nats-server"):
        apt_install("nats-server")
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    os.makedirs("/var/lib/nats-server", exist_ok=True)
    run(
        "start-stop-daemon",
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        binary,
        "--",
        "-a",
        "127.0.0.1",
        "-p",
        "4222",
        "-js",
        "-sd",
        "/var/lib/nats-server",
        "-l",
        "/var/log/nats-server.log",
    )


def postgres_password_for_fresh_install() -> str:
    """A freshly installed Debian cluster asks for a password on TCP: give postgres one."""
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    probe = subprocess.run(
        ["psql", url, "-tAc", "select 1"],
        capture_output=True,
        check=False,
        env=dict(os.environ, PGCONNECT_TIMEOUT="3"),
    )
    if probe.returncode == 0:
        return url
    if shutil.which("runuser"):
        run(
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-qc",
            "ALTER USER postgres PASSWORD 'postgres'",
        )
        return "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
    return url


def container(kind: str) -> str:
    """Last resort: a throwaway server in Docker through testcontainers."""
    if kind == "POSTGRES":
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:16", driver=None).start()
        return str(pg.get_connection_url())
    if kind == "REDIS":
        from testcontainers.redis import RedisContainer

        rc = RedisContainer().start()
        return f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
    from testcontainers.core.container import DockerContainer

    nats = DockerContainer("nats:2").with_command("-js").with_exposed_ports(4222).start()
    return f"nats://{nats.get_container_host_ip()}:{nats.get_exposed_port(4222)}"


def ensure(kind: str, port: int, start: object) -> str | None:
    env_name = f"SIPMESH_TEST_{kind}_URL"
    if os.environ.get(env_name):
        return os.environ[env_name]
    if not reachable("127.0.0.1", port):
        say(f"{kind.lower()} is not running on 127.0.0.1:{port}; starting it")
        start()  # type: ignore[operator]
        if not wait_for("127.0.0.1", port, 30) and docker_available():
            return container(kind)
        if not reachable("127.0.0.1", port):
            say(f"{kind.lower()} could not be started")
            sys.exit(1)
    if kind == "POSTGRES":
        return postgres_password_for_fresh_install()
    return {"REDIS": "redis://127.0.0.1:6379/0", "NATS": "nats://127.0.0.1:4222"}[kind]


def ensure_sip_tools() -> None:
    wanted = {
        "sipp": "sip-tester",
        "sipsak": "sipsak",
        "baresip": "baresip",
        "kamailio": "kamailio",
        # The admin console's browser test drives a headless Chromium (tests/admin).
        "chromium": "chromium",
    }
    missing = [
        pkg
        for tool, pkg in wanted.items()
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")
    ]
    if missing and not apt_install(*missing):
        say(f"could not install {' '.join(missing)}")
        sys.exit(1)
    # rtpengine is only the benchmark's point of comparison for the media relay: a
    # machine without it still runs the suite (the bench says "not installed").
    if not shutil.which("rtpengine") and not os.path.exists("/usr/bin/rtpengine"):
        apt_install("rtpengine-daemon")
    # Kamailio's SQLite driver: the benchmark keeps Kamailio's subscribers there
    # (db_text would scan the whole table on every authentication).
    if not glob.glob("/usr/lib/*/kamailio/modules/db_sqlite.so"):
        apt_install("kamailio-sqlite-modules")


def main() -> None:
    urls = {
        "POSTGRES": ensure("POSTGRES", 5432, start_postgres),
        "REDIS": ensure("REDIS", 6379, start_redis),
        "NATS": ensure("NATS", 4222, start_nats),
    }
    ensure_sip_tools()
    for kind, url in urls.items():
        print(f"export SIPMESH_TEST_{kind}_URL='{url}'")


if __name__ == "__main__":
    main()
