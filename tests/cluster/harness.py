"""The docker-compose topology as local processes: the cluster tests' harness.

No container engine runs here, so the harness reads docker-compose.yml (services,
commands, environment, replicas, aliases, depends_on) and starts every sipmesh
service of it as a `sipmesh serve` process with that very environment, rewritten
for one host:

- each instance gets its own loopback ports for every port its environment binds
  (SIPMESH_HTTP, SIPMESH_GRPC, SIPMESH_ADMIN, SIPMESH_LISTEN);
- `name:port` and `dns:///name:port` references to compose services (or their
  network aliases) become the list of 127.0.0.1 addresses of every instance of
  those services, which is what compose's DNS would answer;
- SIPMESH_STATE, SIPMESH_DB and SIPMESH_BUS point at the test's backends (the real
  Redis, PostgreSQL and NATS of the test fixtures, with a database per test);
- SIPMESH_EDGE__ADVERTISE becomes 127.0.0.1, SIPMESH_INSTANCE_ID `<service>-<n>`.

One-shot services (`sipmesh db init`) run to completion first; servers start in
depends_on order and are awaited on /ready. A target that is not part of the
build yet (its process exits saying so) is reported in `missing_targets`, and
services depending on a service that did not come up are reported as blocked:
nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.compose import COMPOSE_FILE, ComposeService, load_services, start_order

SIPMESH = Path(sys.executable).with_name("sipmesh")
_BIND_KEYS = ("SIPMESH_HTTP", "SIPMESH_GRPC", "SIPMESH_ADMIN")
_REF = re.compile(r"^(?P<scheme>dns:///)?(?P<host>[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")
NOT_IN_BUILD = "is not part of this build"


@dataclass(frozen=True)
class Backends:
    """The shared servers every process uses (URLs as given to sipmesh)."""

    state: str
    db: str
    bus: str


def free_port() -> int:
    """A loopback port free for both TCP and UDP at the moment of asking."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port")


@dataclass
class Instance:
    """One process of one compose service (a replica)."""

    service: str
    index: int
    env: dict[str, str]
    ports: dict[int, int]  # container port -> local port
    log_path: Path
    command: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None
    status: str = "not started"  # not started | running | exited | failed | missing | blocked
    detail: str = ""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def target(self) -> str:
        return self.env.get("SIPMESH_TARGET", "")

    @property
    def http_port(self) -> int:
        return _port_of(self.env["SIPMESH_HTTP"])  # already the local port

    def local(self, container_port: int) -> int:
        return self.ports[container_port]

    def sip_port(self, proto: str = "udp") -> int:
        """The local port of this instance's ``proto`` SIP listener."""
        for item in self.env["SIPMESH_LISTEN"].split(","):
            if item.startswith(proto + ":"):
                return _port_of(item)
        raise KeyError(f"{self.name} has no {proto} listener")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def ready(self) -> tuple[int, dict[str, object]]:
        url = f"http://127.0.0.1:{self.http_port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def _port_of(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


@dataclass
class Cluster:
    """Every instance of the compose topology, started as local processes."""

    workdir: Path
    backends: Backends
    compose_file: Path = COMPOSE_FILE
    ready_timeout: float = 45.0
    instances: dict[str, list[Instance]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    jobs: dict[str, Instance] = field(default_factory=dict)
    jobs_done: bool = False

    # ----- planning: compose environment -> local environment -----

    def plan(self, env: Mapping[str, str] | None = None) -> None:
        """Read the compose file and give every instance its ports and environment."""
        services = load_services(self.compose_file, env=env or {})
        self.order = [n for n in start_order(services) if services[n].is_sipmesh]
        sipmesh = {n: services[n] for n in self.order}
        ports: dict[str, list[dict[int, int]]] = {}
        for name, service in sipmesh.items():
            container_ports = _bound_ports(service)
            ports[name] = [
                {port: free_port() for port in container_ports} for _ in range(service.replicas)
            ]
        hosts: dict[str, list[str]] = {}  # compose name or alias -> services
        for name, service in sipmesh.items():
            for host in (name, *service.aliases):
                hosts.setdefault(host, []).append(name)
        for name, service in sipmesh.items():
            made = []
            for index in range(service.replicas):
                own = ports[name][index]
                made.append(
                    Instance(
                        service=name,
                        index=index + 1,
                        env=self._local_env(service, index, own, hosts, ports),
                        ports=own,
                        log_path=self.workdir / f"{name}-{index + 1}.log",
                        command=service.command,
                    )
                )
            if service.is_server:
                self.instances[name] = made
            else:
                self.jobs[name] = made[0]

    def _local_env(
        self,
        service: ComposeService,
        index: int,
        own: dict[int, int],
        hosts: Mapping[str, list[str]],
        ports: Mapping[str, list[dict[int, int]]],
    ) -> dict[str, str]:
        def resolve(host: str, port: int, *, self_only: bool) -> str:
            if self_only:
                return f"127.0.0.1:{own[port]}"
            addrs = [
                f"127.0.0.1:{instance_ports[port]}"
                for target in hosts[host]
                for instance_ports in ports[target]
                if port in instance_ports
            ]
            if not addrs:
                raise RuntimeError(f"{service.name}: nothing listens on {host}:{port}")
            return ",".join(addrs)

        env: dict[str, str] = {}
        for key, value in service.environment.items():
            if not key.startswith("SIPMESH_"):
                env[key] = value
            elif key == "SIPMESH_STATE":
                env[key] = self.backends.state
            elif key == "SIPMESH_DB":
                env[key] = self.backends.db
            elif key == "SIPMESH_BUS":
                env[key] = self.backends.bus
            elif key in _BIND_KEYS:
                env[key] = f"127.0.0.1:{own[_port_of(value)]}"
            elif key == "SIPMESH_LISTEN":
                env[key] = ",".join(
                    f"{item.split(':')[0]}:127.0.0.1:{own[_port_of(item)]}"
                    for item in value.split(",")
                )
            elif key == "SIPMESH_EDGE__ADVERTISE":
                env[key] = "127.0.0.1"  # the listener's port is then advertised
            elif key == "SIPMESH_INSTANCE_ID":
                env[key] = f"{service.name}-{index + 1}"
            else:
                parts = []
                for part in value.split(","):
                    match = _REF.match(part.strip())
                    if match and match.group("host") in hosts:
                        parts.append(
                            resolve(
                                match.group("host"),
                                int(match.group("port")),
                                self_only=key == "SIPMESH_GRPC_ADVERTISE",
                            )
                        )
                    else:
                        parts.append(part)
                env[key] = ",".join(parts)
        env.setdefault("SIPMESH_INSTANCE_ID", f"{service.name}-{index + 1}")
        # Processes of one host must not fall back to a shared default SQLite file.
        env.setdefault("SIPMESH_DB", self.backends.db)
        return env

    # ----- running -----

    def _spawn(self, instance: Instance) -> None:
        # Only the compose environment: nothing SIPMESH_* leaks in from the test run.
        base = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
        self.workdir.mkdir(parents=True, exist_ok=True)
        with instance.log_path.open("ab") as log:
            instance.proc = subprocess.Popen(
                [str(SIPMESH), *instance.command],
                env={**base, **instance.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )

    def run_jobs(self, timeout: float = 60.0) -> None:
        """Run the one-shot services (compose's service_completed_successfully), once."""
        if self.jobs_done:
            return
        self.jobs_done = True
        for name in self.order:
            job = self.jobs.get(name)
            if job is None:
                continue
            self._spawn(job)
            assert job.proc is not None
            code = job.proc.wait(timeout)
            job.status = "exited" if code == 0 else "failed"
            job.detail = f"exit status {code}"
            if code != 0:
                raise RuntimeError(f"{job.name} failed ({code}):\n{job.log()}")

    def start(self, only: Collection[str] | None = None) -> None:
        """Start every server (or the services named in ``only``) in depends_on order;
        wait for each service's /ready."""
        self.run_jobs()
        services = load_services(self.compose_file)
        for name in self.order:
            if name not in self.instances or (only is not None and name not in only):
                continue
            blocked = [
                dep
                for dep, condition in services[name].depends_on.items()
                if dep in self.instances
                and condition == "service_healthy"
                and not all(i.status == "running" for i in self.instances[dep])
            ]
            for instance in self.instances[name]:
                if blocked:
                    instance.status = "blocked"
                    instance.detail = f"waits on {', '.join(blocked)}, which did not come up"
                    continue
                self._spawn(instance)
            for instance in self.instances[name]:
                if instance.status != "blocked":
                    self._await_ready(instance)

    def _await_ready(self, instance: Instance, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        last: object = None
        while time.monotonic() < deadline:
            assert instance.proc is not None
            if instance.proc.poll() is not None:
                text = instance.log()
                missing = NOT_IN_BUILD in text
                instance.status = "missing" if missing else "failed"
                instance.detail = (
                    f"target {instance.target!r} is not implemented yet"
                    if missing
                    else f"exited with {instance.proc.returncode}: {text[-1500:]}"
                )
                return
            with contextlib.suppress(OSError, ValueError):
                status, body = instance.ready()
                last = body
                if status == 200:
                    instance.status = "running"
                    instance.detail = ""
                    return
            time.sleep(0.1)
        instance.status = "failed"
        instance.detail = f"not ready after {timeout or self.ready_timeout}s: {last}"

    # ----- what runs -----

    def all_instances(self) -> Iterator[Instance]:
        for name in self.order:
            yield from self.instances.get(name, [])

    def running(self) -> list[Instance]:
        return [i for i in self.all_instances() if i.status == "running" and i.alive()]

    @property
    def missing_targets(self) -> list[str]:
        return sorted({i.target for i in self.all_instances() if i.status == "missing"})

    def report(self) -> str:
        """One line per instance: what runs, what is missing and why."""
        lines = []
        for instance in self.all_instances():
            where = f"http 127.0.0.1:{instance.http_port}"
            text = f"{instance.name:<14} {instance.target:<12} {instance.status:<8} {where}"
            lines.append(text + (f"  {instance.detail}" if instance.detail else ""))
        return "\n".join(lines)

    def instance(self, service: str, index: int = 1) -> Instance:
        return self.instances[service][index - 1]

    # ----- failures and restarts -----

    def kill(self, service: str, index: int = 1) -> int:
        """SIGKILL one process (a crash); returns its exit status."""
        instance = self.instance(service, index)
        assert instance.proc is not None
        instance.proc.kill()
        code = instance.proc.wait(10)
        instance.status = "exited"
        return code

    def terminate(self, service: str, index: int = 1, timeout: float = 30.0) -> int:
        """SIGTERM one process and wait for its graceful drain; returns its exit status."""
        instance = self.instance(service, index)
        assert instance.proc is not None
        if instance.proc.poll() is None:
            instance.proc.send_signal(signal.SIGTERM)
        try:
            code = instance.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            instance.proc.kill()
            instance.proc.wait(10)
            raise
        instance.status = "exited"
        return code

    def restart(self, service: str, index: int = 1, *, graceful: bool = True) -> Instance:
        """Stop one process (SIGTERM or SIGKILL) and start it again on the same ports."""
        if graceful:
            self.terminate(service, index)
        else:
            self.kill(service, index)
        instance = self.instance(service, index)
        self._spawn(instance)
        self._await_ready(instance)
        return instance

    def stop(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM everything in reverse start order; returns exit status by instance."""
        codes: dict[str, int] = {}
        started = [i for i in self.all_instances() if i.proc is not None]
        for instance in reversed(started):
            assert instance.proc is not None
            if instance.proc.poll() is None:
                instance.proc.send_signal(signal.SIGTERM)
        for instance in reversed(started):
            assert instance.proc is not None
            try:
                codes[instance.name] = instance.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                instance.proc.kill()
                codes[instance.name] = instance.proc.wait(10)
        return codes


def _bound_ports(service: ComposeService) -> list[int]:
    """The container ports the service's environment binds (probe, gRPC, admin, SIP)."""
    found: list[int] = []
    for key in _BIND_KEYS:
        if key in service.environment:
            found.append(_port_of(service.environment[key]))
    for item in service.environment.get("SIPMESH_LISTEN", "").split(","):
        if item:
            found.append(_port_of(item))
    return sorted(set(found))
