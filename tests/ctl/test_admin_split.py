"""``sipmesh ctl`` against split services: a registrar process and an admin process
sharing PostgreSQL, Redis and NATS, started as real `sipmesh serve` processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from sipmesh.runtime.cluster import INSTANCE_KEY
from sipmesh.state.factory import open_kv
from tests.e2e.procs import ADMIN_TOKEN, SIPMESH, SipmeshProcess, make_process

DOMAIN = "split.test"

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nats]


def run(*argv: str, namespace: str = "sipmesh") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env["SIPMESH_NAMESPACE"] = namespace
    env["SIPMESH_ADMIN_TOKEN"] = ADMIN_TOKEN
    result = subprocess.run(
        [*SIPMESH, "ctl", *argv], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    return result.returncode, result.stdout, result.stderr


def test_verbs_against_split_registrar_and_admin(
    tmp_path: Path, postgres_url: str, redis_url: str, nats_url: str, unique_prefix: str
) -> None:
    # A namespace of its own: instance announcements of earlier tests' processes (kept
    # for their TTL in the shared Redis) must not count as instances of this cluster.
    shared = {
        "SIPMESH_STATE": redis_url,
        "SIPMESH_DB": postgres_url,
        "SIPMESH_BUS": nats_url,
        "SIPMESH_NAMESPACE": unique_prefix,
    }
    registrar = make_process(
        f"registrar-{unique_prefix}",
        tmp_path,
        targets="registrar",
        env=shared,
        extra_args=["--domain", DOMAIN],
    )
    admin: SipmeshProcess | None = None
    registrar.start()
    try:
        registrar.wait_ready()
        admin = make_process(
            f"admin-{unique_prefix}",
            tmp_path,
            targets="admin",
            env={
                **shared,
                "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{registrar.grpc_port}",
            },
            extra_args=["--domain", DOMAIN],
        )
        admin.start()
        admin.wait_ready()
        api = ["--admin", f"127.0.0.1:{admin.grpc_port}", "--domain", DOMAIN]

        status, out, _ = run(*api, "ping")
        assert status == 0
        assert out.startswith(f"pong from {admin.name}")
        status, out, err = run(*api, "uptime")
        assert status == 0, err
        assert registrar.name in out
        assert admin.name in out

        user = f"gina{unique_prefix}"
        assert run("--db", postgres_url, "add", f"{user}@{DOMAIN}", "pw")[0] == 0
        status, out, _ = run(*api, "ul", "add", f"{user}@{DOMAIN}", "sip:gina@192.0.2.9:5060")
        assert status == 0, out
        status, out, _ = run(
            "--db",
            postgres_url,
            "--state",
            redis_url,
            "--json",
            "ul",
            "show",
            f"{user}@{DOMAIN}",
            namespace=unique_prefix,
        )
        assert [b["contact"] for b in json.loads(out)] == ["sip:gina@192.0.2.9:5060"]

        status, out, _ = run(*api, "stats", "usrloc", "--per-instance")
        assert status == 0
        assert f"{registrar.name}:usrloc:registered_contacts" in out

        assert run(*api, "domain", "add", f"d{unique_prefix}.test")[0] == 0
        status, out, _ = run("--db", postgres_url, "domain", "show")
        assert f"d{unique_prefix}.test" in out

        assert run(*api, "ban", "add", "198.51.100.99", "30")[0] == 0
        status, out, err = run(*api, "ban", "show")
        assert status == 0, err
        assert "198.51.100.99" in out
        assert run(*api, "ban", "rm", "198.51.100.99")[0] == 0

        # A registrar that dies without withdrawing its announcement is named.
        registrar.kill()
        status, out, err = run(*api, "stats")
        assert status == 1
        assert f"not answering: {registrar.name}" in err
        assert "# 1 instance(s)" in out
    finally:
        if admin is not None:
            admin.stop()
        registrar.stop()
        asyncio.run(_forget(redis_url, registrar.name, unique_prefix))


async def _forget(redis_url: str, instance: str, namespace: str) -> None:
    """Remove a killed instance's announcement, so later tests do not wait for it."""
    kv = open_kv(redis_url, prefix=namespace + ":")
    try:
        await kv.delete(INSTANCE_KEY + instance)
    finally:
        await kv.close()
