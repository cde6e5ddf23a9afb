"""deploy/ in Docker (a skip without it, a failure under ``CI=true``): the ``FROM scratch`` etcd
image is built, the Compose file's three members start from their own flags with ``docker run``
on loopback, and a worker runs with a Compose worker's command and environment against them;
and, with Compose too, ``up`` starts the etcd cluster on the file's own network."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lessor import Context, Partition
from lessor.testing.child import Child
from tests.support import needs
from tests.support.deploy import (
    COMPOSE,
    ETCD_MEMBERS,
    WORKER_MODULE,
    argv,
    compose_command,
    environment,
    flags,
    load_compose,
    worker_services,
)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    problem = needs.docker_problem()
    if problem is not None:
        needs.missing(problem)
    import docker  # noqa: PLC0415  (testcontainers' dependency)

    client = docker.from_env(timeout=30)
    try:
        yield client
    finally:
        client.close()


def _on_loopback(args: list[str], ports: dict[tuple[str, str], int], member: str) -> list[str]:
    """The member's flags with every ``http://<service or 0.0.0.0>:<port>`` URL moved to its
    own port on 127.0.0.1: host networking, as Docker runs here (no bridge)."""

    def move(match: re.Match[str]) -> str:
        host = member if match.group(1) == "0.0.0.0" else match.group(1)
        return f"http://127.0.0.1:{ports[(host, match.group(2))]}"

    return [re.sub(r"http://([A-Za-z0-9_.-]+):(\d+)", move, arg) for arg in args]


def _run_a_compose_worker(
    compose: dict[str, Any], ports: dict[tuple[str, str], int], tmp_path: Path
) -> None:
    """Run the first Compose worker's command and environment here, for a few seconds, against
    the members at ``ports``: its own store, metrics port and endpoints moved to loopback."""
    from lessor.demo.store import ReminderStore  # noqa: PLC0415
    from lessor.testing import free_port  # noqa: PLC0415

    name, service = next(iter(worker_services(compose).items()))
    store = tmp_path / "reminders.db"
    ReminderStore.create(store, 2000).close()
    metrics_port = free_port("127.0.0.1")
    args = flags(argv(service["command"]), name)
    args |= {"--store": str(store), "--metrics-port": str(metrics_port), "--seconds": "4"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LESSOR_ETCD_")}
    env |= environment(service)
    env["LESSOR_ETCD_ENDPOINTS"] = ",".join(
        f"127.0.0.1:{ports[(host, port)]}"
        for host, port in (e.rsplit(":", 1) for e in env["LESSOR_ETCD_ENDPOINTS"].split(","))
    )
    command = [sys.executable, "-m", WORKER_MODULE, *(x for pair in args.items() for x in pair)]
    with Child(name, command, log=tmp_path / "worker.log", lines=False, env=env) as worker:
        page = ""
        deadline = time.monotonic() + 30
        while not page and worker.running and time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r,
            ):
                page = r.read().decode()
            if not page:  # no readiness signal but the port: wait a little, or for its exit
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(timeout=0.1)
        status = worker.wait(timeout=60)
        output = worker.log_text()
    assert status == 0, f"{name} as {' '.join(command)}: exit {status}\n{output}"
    assert "lessor_acquisitions" in page, f"{name}: no lessor metrics on --metrics-port:\n{page}"
    with contextlib.closing(ReminderStore(store)) as opened:
        leases = opened.leases()
    assert leases, f"{name} took no lease in 4 s:\n{output}"
    assert all(lease.released is not None for lease in leases), "a lease not given back"


@pytest.mark.slow
def test_etcd_image_builds_and_the_compose_members_start_as_one_cluster(
    docker_client: Any, tmp_path: Path
) -> None:
    from lessor.etcd import EtcdLessor  # noqa: PLC0415
    from lessor.testing import etcd_image, free_ports, wait_healthy  # noqa: PLC0415

    compose = load_compose(os.environ)  # as `docker compose` would resolve it here
    members = {n: s for n, s in compose["services"].items() if n in ETCD_MEMBERS}
    image = etcd_image()
    assert {s["image"] for s in members.values()} == {image}, "not the image etcd_image() built"

    wanted = [(name, port) for name in members for port in ("2379", "2380")]
    ports = dict(zip(wanted, free_ports(len(wanted)), strict=True))
    run = uuid.uuid4().hex[:8]
    containers: dict[str, Any] = {}
    try:
        for name, service in members.items():
            containers[name] = docker_client.containers.run(
                image,
                entrypoint=argv(service["entrypoint"]),
                command=_on_loopback(argv(service["command"]), ports, name),
                name=f"lessor-deploy-{name}-{run}",
                network_mode="host",
                labels={"org.lessor.test": "test_deploy"},
                detach=True,
            )
        deadline = time.monotonic() + 60
        for name, container in containers.items():

            def exited(container: Any = container) -> str | None:
                container.reload()
                if container.status not in ("exited", "dead"):
                    return None
                logs = container.logs(tail=20).decode(errors="replace")
                return f"{container.name} exited while starting:\n{logs}"

            # /health says true only once the member sees a leader: the three form a cluster.
            url = f"http://127.0.0.1:{ports[(name, '2379')]}/health"
            assert wait_healthy(url, deadline, exited), (
                f"{container.name} not healthy:\n{container.logs(tail=20).decode()}"
            )

        endpoints = [f"127.0.0.1:{ports[(name, '2379')]}" for name in members]
        request = urllib.request.Request(
            f"http://{endpoints[0]}/v3/cluster/member/list", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            listed = json.load(response)["members"]
        assert sorted(m["name"] for m in listed) == sorted(ETCD_MEMBERS), listed

        # A lease through one member excludes a holder that talks to another.
        ctx = Context.background().with_timeout(20)
        with (
            EtcdLessor([endpoints[0]], holder="first") as first,
            EtcdLessor([endpoints[2]], holder="third") as third,
            first.lease("deploy", Partition(0, 10), 5, ctx=ctx) as held,
            third.lease("deploy", Partition(0, 20), 5, ctx=ctx) as rest,
        ):
            assert held.partitions == [Partition(0, 10)]
            assert rest.partitions == [Partition(10, 20)]

        _run_a_compose_worker(compose, ports, tmp_path)
    finally:
        for container in containers.values():
            container.remove(force=True, v=True)


@pytest.mark.slow
def test_compose_up_starts_the_etcd_cluster(docker_client: Any) -> None:
    """The Compose file's own network, names and volumes: ``up`` its three members (the image
    built locally, as the README says) and lease through them on the project's network."""
    from lessor.etcd import EtcdLessor  # noqa: PLC0415
    from lessor.testing import etcd_image, wait_healthy  # noqa: PLC0415

    command = compose_command()
    if command is None:
        needs.missing("needs `docker compose` or docker-compose (Debian: apt-get install "
                      "docker-compose)")  # fmt: skip
    etcd_image()  # Compose can neither pull nor build it
    project = f"lessordeploy{uuid.uuid4().hex[:8]}"
    compose = [*command, "-p", project, "-f", str(COMPOSE)]

    def run(*args: str) -> None:
        done = subprocess.run(
            [*compose, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stdout}{done.stderr}"

    try:
        run("up", "-d", *ETCD_MEMBERS)
        endpoints = []
        deadline = time.monotonic() + 60
        for member in ETCD_MEMBERS:
            (container,) = docker_client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={project}",
                        f"com.docker.compose.service={member}",
                    ]
                },
            )
            networks = container.attrs["NetworkSettings"]["Networks"]
            (address,) = {n["IPAddress"] for n in networks.values() if n["IPAddress"]}

            def exited(container: Any = container) -> str | None:
                container.reload()
                if container.status not in ("exited", "dead"):
                    return None
                return f"{container.name} exited:\n{container.logs(tail=20).decode()}"

            assert wait_healthy(f"http://{address}:2379/health", deadline, exited), (
                f"{container.name} not healthy:\n{container.logs(tail=20).decode()}"
            )
            endpoints.append(f"{address}:2379")

        ctx = Context.background().with_timeout(20)
        with (
            EtcdLessor(endpoints[:1], holder="first") as first,
            EtcdLessor(endpoints[1:], holder="others", endpoint_order="given") as others,
            first.lease("deploy", Partition(0, 10), 5, ctx=ctx) as held,
            others.lease("deploy", Partition(0, 20), 5, ctx=ctx) as rest,
        ):
            assert held.partitions == [Partition(0, 10)]
            assert rest.partitions == [Partition(10, 20)]
    finally:
        run("down", "--volumes", "--timeout", "2")
