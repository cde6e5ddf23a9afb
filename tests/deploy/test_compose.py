"""deploy/compose.yaml: it parses, and Compose itself accepts it when installed (a skip with the
reason when not); it refers only to what exists (services, volumes, build contexts); the etcd
members agree on one cluster; the seed's script makes a store once, before the workers start;
the workers serve metrics, reach every member, and their arguments parse with the worker's own
parser."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from lessor.etcd.settings import EtcdSettings
from tests.support import needs
from tests.support.deploy import (
    COMPOSE,
    DEPLOY,
    ETCD_DOCKERFILE,
    ETCD_MEMBERS,
    LESSOR_VARIABLES,
    METRICS_PORT,
    STORE_MODULE,
    WORKER_IMAGE,
    argv,
    compose_command,
    dockerfile_instructions,
    environment,
    etcd_services,
    exec_form,
    flags,
    load_compose,
    named_volume,
    worker_parser,
    worker_services,
)


def test_compose_file_is_valid_for_compose_itself() -> None:
    command = compose_command()
    if command is None:
        needs.missing("needs `docker compose` or docker-compose to check the file (structure "
                      "only here; Debian: apt-get install docker-compose)")  # fmt: skip
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=DEPLOY,
    )
    assert done.returncode == 0, f"{' '.join(command)} config -q:\n{done.stdout}{done.stderr}"


def test_compose_services_refer_only_to_what_exists() -> None:
    compose = load_compose()
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        where = f"{COMPOSE.name}: service {name}"
        assert service.get("image") or service.get("build"), f"{where} has no image nor build"
        build = service.get("build")
        if build is not None:
            context = DEPLOY / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert context.is_dir(), f"{where}: no build context {context}"
            assert (context / (dockerfile or "Dockerfile")).is_file(), f"{where}: no {dockerfile}"
        for mount in service.get("volumes") or []:
            source, _ = named_volume(mount)
            if source is not None:
                assert source in declared_volumes, f"{where}: volume {source} is not declared"
        depends = service.get("depends_on") or []
        for other in depends:
            assert other in services, f"{where} depends on {other}, which is not a service"
            if isinstance(depends, dict):
                condition = depends[other].get("condition", "service_started")
                assert condition in {
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully",
                }, f"{where}: unknown condition {condition!r} for {other}"
                if condition == "service_healthy":
                    assert "healthcheck" in services[other], f"{other} has no healthcheck"

    # No cycle: compose would refuse to start any of them.
    def dependencies(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"{COMPOSE.name}: dependency cycle {' -> '.join((*path, name))}"
        for other in services[name].get("depends_on") or []:
            dependencies(other, (*path, name))

    for name in services:
        dependencies(name, ())


def test_compose_etcd_members_form_one_cluster() -> None:
    compose = load_compose()
    members = etcd_services(compose)
    assert sorted(members) == sorted(ETCD_MEMBERS), (
        f"the etcd services (image lessor-etcd:local) are {sorted(members)}"
    )
    # The image's etcd is /etcd (deploy/etcd-image), which the Compose file must start.
    entrypoint = next(
        exec_form(args, "etcd-image ENTRYPOINT")
        for word, args in dockerfile_instructions(ETCD_DOCKERFILE)
        if word == "ENTRYPOINT"
    )
    expected_cluster = {m: f"http://{m}:2380" for m in ETCD_MEMBERS}
    seen_volumes = set()
    tokens = set()
    for name, service in members.items():
        where = f"{COMPOSE.name}: {name}"
        assert argv(service.get("entrypoint")) == entrypoint, f"{where}: not the image's etcd"
        f = flags(argv(service["command"]), where)
        assert f["--name"] == name, f"{where}: --name {f['--name']}"
        cluster = dict(item.split("=", 1) for item in f["--initial-cluster"].split(","))
        assert cluster == expected_cluster, f"{where}: --initial-cluster {cluster}"
        assert f["--initial-advertise-peer-urls"] == cluster[name], where
        assert f["--advertise-client-urls"] == f"http://{name}:2379", where
        assert f["--listen-client-urls"] == "http://0.0.0.0:2379", where
        assert f["--listen-peer-urls"] == "http://0.0.0.0:2380", where
        tokens.add(f["--initial-cluster-token"])
        assert f["--initial-cluster-state"] == "new", where
        # Off by default in etcd, and every lease writes: without it the database fills up.
        assert f.get("--auto-compaction-mode") in {"revision", "periodic"}, where
        assert f.get("--auto-compaction-retention"), f"{where}: no --auto-compaction-retention"
        assert int(f.get("--quota-backend-bytes", "0")) > 0, f"{where}: no --quota-backend-bytes"
        mounts = dict(named_volume(m)[::-1] for m in service.get("volumes") or [])
        volume = mounts.get(f["--data-dir"])
        assert volume, f"{where}: its --data-dir {f['--data-dir']} is not on a named volume"
        assert volume not in seen_volumes, f"{where}: shares the data volume {volume}"
        seen_volumes.add(volume)
    assert len(tokens) == 1, f"the members name different clusters: {sorted(tokens)}"


def seed_script(compose: dict[str, Any]) -> tuple[str, PurePosixPath, list[str]]:
    """The seed's ``sh -c`` script, the store it guards, and the store command it runs."""
    seed = compose["services"]["seed"]
    assert argv(seed["entrypoint"]) == ["sh", "-c"], seed["entrypoint"]
    (script,) = argv(seed["command"]) if isinstance(seed["command"], list) else [seed["command"]]
    guard, sep, run = script.partition("||")
    assert sep, f"the seed does not skip an existing store: {script!r}"
    test, flag, path = shlex.split(guard)
    assert (test, flag) == ("test", "-e"), guard
    command = shlex.split(run)
    assert command[0] == "exec", f"the store command should replace the shell: {run!r}"
    return script, PurePosixPath(path), command[1:]


def test_compose_seed_creates_the_store_before_the_workers_start() -> None:
    compose = load_compose()
    seed = compose["services"]["seed"]
    assert seed["image"] == WORKER_IMAGE
    assert str(seed.get("restart", "no")) == "no", "the seed is one-shot: never restarted"
    _, store, command = seed_script(compose)
    assert command[:3] == ["python", "-m", STORE_MODULE] and command[3] == "create", command
    created = flags(command[4:], "seed")
    assert int(created["--rows"]) > 0
    assert PurePosixPath(created["--path"]) == store, "the seed guards another file"
    seed_volumes = dict(named_volume(m)[::-1] for m in seed["volumes"])
    assert str(store.parent) in seed_volumes, f"the seed writes {store} outside its volume"

    workers = worker_services(compose)
    assert len(workers) >= 2, f"expected several workers, found {sorted(workers)}"
    for name, worker in workers.items():
        depends = worker["depends_on"]
        assert depends["seed"]["condition"] == "service_completed_successfully", name
        assert set(ETCD_MEMBERS) <= set(depends), f"{name} does not wait for every etcd member"
        args = flags(argv(worker["command"]), name)
        assert args["--store"] == str(store), f"{name} sweeps another store: {args['--store']}"
        volumes = dict(named_volume(m)[::-1] for m in worker["volumes"])
        assert volumes.get(str(store.parent)) == seed_volumes[str(store.parent)], (
            f"{name} does not mount the seed's volume at {store.parent}"
        )


def test_compose_seed_script_creates_a_store_once(tmp_path: Path) -> None:
    """The seed's own script, run here with this interpreter as ``python`` and a smaller
    store: it must make a store the first time and leave it be the second."""
    script, store, _ = seed_script(load_compose())
    local = tmp_path / store.name
    script = re.sub(r"--rows \d+", "--rows 1000", script.replace(str(store), str(local)))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A script, not a symlink: a virtualenv's python finds its environment from its own path.
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for attempt in ("first", "second"):
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{attempt} seed run: {script}\n{done.stdout}{done.stderr}"
        assert local.is_file(), (
            f"{attempt} seed run exited 0 but made no store at {local}: does {STORE_MODULE} "
            "have a command line (python -m ... create --path P --rows N)?"
        )
        with contextlib.closing(sqlite3.connect(local)) as db:
            (rows,) = db.execute("SELECT count(*) FROM reminders").fetchone()
        assert rows == 1000, f"{attempt} seed run: {rows} reminders"


def test_compose_workers_serve_metrics_and_reach_every_etcd_member() -> None:
    compose = load_compose()
    members = etcd_services(compose)
    workers = worker_services(compose)
    names = set()
    for name, worker in workers.items():
        args = flags(argv(worker["command"]), name)
        assert int(args["--metrics-port"]) == METRICS_PORT, name
        names.add(args["--worker"])
        healthcheck = " ".join(argv(worker["healthcheck"]["test"]))
        assert f":{METRICS_PORT}/metrics" in healthcheck, f"{name}'s healthcheck: {healthcheck}"
        grace = worker["stop_grace_period"]
        assert grace.endswith("s"), f"{name}: stop_grace_period {grace!r}: write it in s"
        assert float(grace[:-1]) > float(args["--lease-seconds"]), (
            f"{name}: a stopped worker is killed before its lease can end"
        )
        env = environment(worker)
        ours = {k for k in env if k.startswith("LESSOR_ETCD_")}
        assert ours <= LESSOR_VARIABLES, f"{name}: unknown variables {ours - LESSOR_VARIABLES}"
        settings = EtcdSettings.from_environment(env)
        advertised = {
            flags(argv(s["command"]), n)["--advertise-client-urls"].removeprefix("http://")
            for n, s in members.items()
        }
        assert set(settings.endpoints) == advertised, f"{name}: {settings.endpoints}"
    assert len(names) == len(workers), f"two workers share a --worker name: {sorted(names)}"


def test_compose_worker_arguments_parse_with_the_worker_cli() -> None:
    parser = worker_parser()
    for name, worker in worker_services(load_compose()).items():
        parsed = parser.parse_args(argv(worker["command"]))
        assert parsed.metrics_port == METRICS_PORT, name
