"""deploy/: the Compose file, the worker's Dockerfile and the Kubernetes manifests.

No image can be pulled here and there is no Kubernetes cluster, so these check what can be
checked. Always: the files parse; they refer only to things that exist (services, volumes,
build contexts, ConfigMaps, ports, Secrets the README explains, the ``LESSOR_ETCD_*``
variables that ``lessor.etcd.settings`` reads, no more and no fewer); the etcd members agree on
one cluster; the workers' arguments parse with the worker's own parser; the seed's script makes
a store once. When installed: ``docker compose config`` (or docker-compose's) and ``kubectl
kustomize``, skipped with the reason when not. With Docker (a skip without it, a failure under
``CI=true``): the ``FROM scratch`` etcd image is built, the Compose file's three members start
from their own flags with ``docker run`` on loopback, and a worker runs with a Compose worker's
command and environment against them; and, with Compose too, ``up`` starts the etcd cluster on
the file's own network."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from lessor import Context, Partition
from lessor.etcd.settings import ENVIRONMENT, EtcdSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
WORKER_DOCKERFILE = DEPLOY / "worker" / "Dockerfile"
ETCD_DOCKERFILE = DEPLOY / "etcd-image" / "Dockerfile"
README = DEPLOY / "README.md"

ETCD_MEMBERS = ("etcd1", "etcd2", "etcd3")
WORKER_REPOSITORY = "lessor-worker"
WORKER_IMAGE = f"{WORKER_REPOSITORY}:local"
WORKER_MODULE = "lessor.demo.worker"
STORE_MODULE = "lessor.demo.store"
METRICS_PORT = 9100
LESSOR_VARIABLES = frozenset(ENVIRONMENT.values())
IN_CI = os.environ.get("CI", "").lower() in {"true", "1", "yes"}


# --- reading the files ------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\})")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable substitution (``${VAR}``, ``${VAR:-default}``, ``$$``) through a
    loaded document. ``${VAR-default}`` is treated as ``${VAR:-default}``: close enough here."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        if environ.get(name):
            return environ[name]
        if default is None:
            raise AssertionError(f"{COMPOSE.name}: ${{{name}}} has no default")
        return default

    return _VARIABLE.sub(substitute, value)


def load_compose(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Compose file, its ``x-`` anchors merged (PyYAML does ``<<``) and variables
    resolved from ``environ`` (none: every default)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(raw, dict), f"{COMPOSE} is not a mapping"
    resolved: dict[str, Any] = interpolate(raw, environ or {})
    return resolved


def argv(value: Any) -> list[str]:
    """A Compose ``command``/``entrypoint``: a list, or a string split as a shell would."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), f"not a command: {value!r}"
    return [str(v) for v in value]


def flags(args: list[str], where: str) -> dict[str, str]:
    """``--flag value`` (or ``--flag=value``) pairs; a flag given twice is an error."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"{where}: {arg!r} is not a --flag (in {args})"
        if "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
        else:
            assert i + 1 < len(args), f"{where}: {arg} has no value"
            name, value = arg, args[i + 1]
            i += 2
        assert name not in out, f"{where}: {name} given twice"
        out[name] = value
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def named_volume(mount: str | dict[str, Any]) -> tuple[str | None, str]:
    """(source if a named volume, else None; target) of a service's volume entry."""
    if isinstance(mount, dict):
        source, target = mount.get("source"), mount["target"]
        return (source if mount.get("type", "volume") == "volume" else None), target
    source, _, rest = mount.partition(":")
    target = rest.split(":")[0]
    if not rest:  # an anonymous volume
        return None, source
    return (None if source.startswith((".", "/", "~")) else source), target


def etcd_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from lessor.testing.image import LOCAL_IMAGE  # noqa: PLC0415

    return {n: s for n, s in compose["services"].items() if s.get("image") == LOCAL_IMAGE}


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the worker's own entrypoint (the seed overrides it)."""
    return {
        name: s
        for name, s in compose["services"].items()
        if s.get("image") == WORKER_IMAGE and "entrypoint" not in s
    }


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path}: ends in a continuation line"
    return out


def exec_form(arguments: str, where: str) -> list[str]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (
        f"{where} is not in exec (JSON list) form: {arguments}: in shell form, the process "
        "under /bin/sh does not get the stop signal"
    )
    return value


def load_manifests() -> dict[str, list[dict[str, Any]]]:
    """Every document of every manifest of deploy/kubernetes, by file name."""
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def the_one(kind: str) -> dict[str, Any]:
    found = [d for ds in load_manifests().values() for d in ds if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {KUBERNETES}, found {len(found)}"
    return found[0]


def sweeper_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the sweeper pod should run one container"
    container: dict[str, Any] = containers[0]
    return container


def worker_parser() -> Any:
    """The worker's own argparse parser, or a skip saying why there is none."""
    if importlib.util.find_spec(WORKER_MODULE) is None:
        pytest.skip(f"{WORKER_MODULE} is not there yet: the worker arguments are unchecked")
    from lessor.demo.worker import build_parser  # noqa: PLC0415

    return build_parser()


# --- Compose ----------------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            done = subprocess.run(
                [docker, "compose", "version"], capture_output=True, timeout=30, check=False
            )
            if done.returncode == 0:
                return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid_for_compose_itself() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed: structure only")
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


# --- the worker's Dockerfile ------------------------------------------------------------------


def test_worker_dockerfile_lints() -> None:
    instructions = dockerfile_instructions(WORKER_DOCKERFILE)
    words = [word for word, _ in instructions]
    where = str(WORKER_DOCKERFILE.relative_to(ROOT))
    assert words[0] == "FROM", f"{where}: starts with {words[0]}"
    stages = [args for word, args in instructions if word == "FROM"]
    assert stages[-1].split()[0] == "python:3.11-slim", f"{where}: final stage {stages[-1]}"
    # Not root: numeric, so that Kubernetes' runAsNonRoot can verify it.
    users = [args for word, args in instructions if word == "USER"]
    assert users, f"{where}: no USER: the worker would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{where}: USER {users[-1]} (want a non-0 uid)"
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), (
        f"{where}: a RUN after USER would run as the worker"
    )
    entrypoint = [exec_form(a, f"{where} ENTRYPOINT") for w, a in instructions if w == "ENTRYPOINT"]
    assert entrypoint, f"{where}: no ENTRYPOINT"
    assert entrypoint[-1] == ["python", "-m", WORKER_MODULE], entrypoint[-1]
    installs = " ".join(args for word, args in instructions if word == "RUN")
    assert "pip install" in installs and '".[metrics]"' in installs, (
        f"{where}: does not install the package with its metrics extra"
    )
    everything = " ".join(args for _, args in instructions).lower()
    assert "etcd" not in everything, f"{where}: the worker image must not carry etcd"
    exposed = [port for w, args in instructions if w == "EXPOSE" for port in args.split()]
    assert str(METRICS_PORT) in exposed, f"{where}: EXPOSE {exposed}"
    # The context is the repository root: what it copies must exist there, and not be ignored.
    ignore = (WORKER_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{where}: COPY {source}: not in the repository"
                assert f"!{source.rstrip('/')}" in [i.rstrip("/") for i in ignore], (
                    f"{where}: COPY {source}, which Dockerfile.dockerignore leaves out"
                )


def test_compose_and_manifests_run_the_worker_image() -> None:
    compose = load_compose()
    for name, service in worker_services(compose).items():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == WORKER_DOCKERFILE, (
            f"{name} is not built from {WORKER_DOCKERFILE}"
        )
    image = sweeper_container(the_one("Deployment"))["image"]
    assert image.partition(":")[0] == WORKER_REPOSITORY, image
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert [i["name"] for i in kustomization["images"]] == [WORKER_REPOSITORY]


# --- Kubernetes -------------------------------------------------------------------------------


def test_manifests_parse_and_carry_the_required_fields() -> None:
    manifests = load_manifests()
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests), (
        "kustomization.yaml's resources are not the manifests of deploy/kubernetes"
    )
    kinds: dict[str, set[str]] = {}
    for file, docs in manifests.items():
        assert docs, f"{file} is empty"
        for doc in docs:
            for field in ("apiVersion", "kind", "metadata"):
                assert field in doc, f"{file}: a document has no {field}"
            name = doc["metadata"].get("name")
            assert name, f"{file}: a {doc['kind']} has no metadata.name"
            assert name not in kinds.setdefault(doc["kind"], set()), f"two {doc['kind']} {name}"
            kinds[doc["kind"]].add(name)
    assert {"Deployment", "ConfigMap", "PodDisruptionBudget"} <= set(kinds), sorted(kinds)
    assert the_one("PodDisruptionBudget")["apiVersion"] == "policy/v1"
    assert the_one("Deployment")["apiVersion"] == "apps/v1"


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` unchecked, structure only")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {KUBERNETES}:\n{done.stderr}"
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]) for ds in load_manifests().values() for d in ds}
    assert built == ours


def test_deployment_probes_metrics_scraping_and_graceful_stop() -> None:
    deployment = the_one("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items(), "selector misses pods"
    assert spec["replicas"] >= 2, "one sweeper has nobody to take over its ranges"
    container = sweeper_container(deployment)

    args = flags(container["args"], "the sweeper's args")
    metrics_port = int(args["--metrics-port"])
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert ports.get("metrics") == metrics_port, f"container ports {ports}"
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        port = check["port"]
        assert (ports.get(port) if isinstance(port, str) else port) == metrics_port, probe
        assert check["path"] == "/metrics", probe
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"

    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests), f"resource requests {requests}"
    assert "memory" in container["resources"].get("limits", {})

    # A stopped sweeper gives back its lease (at most --lease-seconds long) before SIGKILL.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(args["--lease-seconds"]), f"grace {grace}s < the lease"

    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    worker_user = next(
        a for w, a in reversed(dockerfile_instructions(WORKER_DOCKERFILE)) if w == "USER"
    )
    assert str(security["runAsUser"]) == worker_user.split(":")[0], "not the image's user"

    # $(VAR) in args expands only from the container's env; an unknown one stays literal.
    defined = {e["name"] for e in container.get("env", [])}
    for arg in container["args"]:
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
            assert name in defined, f"args use $({name}), which env does not define"


def test_deployment_mounts_and_references_exist() -> None:
    deployment = the_one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmaps = {
        d["metadata"]["name"]
        for ds in load_manifests().values()
        for d in ds
        if d["kind"] == "ConfigMap"
    }
    secrets: set[str] = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts unknown {mount['name']}"
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, source
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["name"] in configmaps, var
            if "secretKeyRef" in ref:
                secrets.add(ref["secretKeyRef"]["name"])
    secrets |= {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    # The Secrets are the operator's to create: the README must say how.
    readme = README.read_text()
    for secret in secrets:
        assert secret in readme, f"{README.name} does not say how to create Secret {secret}"


def test_manifests_set_exactly_the_variables_the_etcd_settings_read() -> None:
    deployment = the_one("Deployment")
    container = sweeper_container(deployment)
    configmaps = {
        d["metadata"]["name"]: d.get("data", {})
        for ds in load_manifests().values()
        for d in ds
        if d["kind"] == "ConfigMap"
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= configmaps[source["configMapRef"]["name"]]
    for var in container.get("env", []):
        source = var["value"] if "value" in var else f"<from {next(iter(var['valueFrom']))}>"
        env[var["name"]] = source
    ours = {k for k in env if k.startswith("LESSOR_ETCD_")}
    assert ours - LESSOR_VARIABLES == set(), "variables lessor.etcd.settings does not read"
    assert LESSOR_VARIABLES - ours == set(), "settings the manifests leave out"

    settings = EtcdSettings.from_environment(env)
    assert len(settings.endpoints) >= 3, "an existing etcd cluster: list every member"
    # The TLS files are the mounted Secret's.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for variable in ("LESSOR_ETCD_CA_CERT", "LESSOR_ETCD_CERT", "LESSOR_ETCD_KEY"):
        path = PurePosixPath(env[variable])
        holders = [n for n, at in mounts.items() if path.parent == PurePosixPath(at)]
        assert holders and "secret" in volumes[holders[0]], f"{variable}={path} is not mounted"
    secret_refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in container["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert "LESSOR_ETCD_PASSWORD" in secret_refs, "the etcd password belongs in a Secret"
    assert "LESSOR_ETCD_PASSWORD" not in env or env["LESSOR_ETCD_PASSWORD"].startswith("<from")


def test_poddisruptionbudget_covers_the_sweepers() -> None:
    deployment = the_one("Deployment")
    pdb = the_one("PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = {k for k in ("minAvailable", "maxUnavailable") if k in pdb["spec"]}
    assert len(budget) == 1, f"a PodDisruptionBudget takes one of the two, has {budget}"
    if "maxUnavailable" in pdb["spec"] and isinstance(pdb["spec"]["maxUnavailable"], int):
        assert 0 < pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_manifest_worker_arguments_parse_with_the_worker_cli() -> None:
    parser = worker_parser()
    container = sweeper_container(the_one("Deployment"))
    values = {e["name"]: e.get("value", "x") for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    parsed = parser.parse_args(args)
    assert parsed.metrics_port == METRICS_PORT


def test_readme_names_the_etcd_settings_operators_must_set() -> None:
    readme = README.read_text()
    for needed in ("--auto-compaction-retention", "--quota-backend-bytes", "3.5.13"):
        assert needed in readme, f"{README.name} does not mention {needed}"
    for variable in LESSOR_VARIABLES:
        assert variable in readme, f"{README.name} does not mention {variable}"


# --- the etcd image, and the Compose file's members started from it ---------------------------


def _docker_problem() -> str | None:
    if importlib.util.find_spec("testcontainers") is None:
        return "the testcontainers package is not installed"
    from lessor.testing import docker_unavailable  # noqa: PLC0415  (needs testcontainers)

    return docker_unavailable()


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    problem = _docker_problem()
    if problem is not None:
        if IN_CI:  # not a skip, which a green CI run would hide
            pytest.fail(f"CI is set but Docker is unavailable: {problem}", pytrace=False)
        pytest.skip(f"Docker is unavailable: {problem}")
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
    worker = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        page = ""
        deadline = time.monotonic() + 30
        while not page and worker.poll() is None and time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r,
            ):
                page = r.read().decode()
            if not page:  # no readiness signal but the port: wait a little, or for its exit
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=0.1)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, f"{name} as {' '.join(command)}: exit {worker.returncode}\n{err}"
    assert "lessor_acquisitions" in page, f"{name}: no lessor metrics on --metrics-port:\n{page}"
    with contextlib.closing(ReminderStore(store)) as opened:
        leases = opened.leases()
    assert leases, f"{name} took no lease in 4 s:\n{out}{err}"
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

    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
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
