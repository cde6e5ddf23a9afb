"""Reading deploy/: the Compose file (Compose's own variable substitution and argument forms),
Dockerfiles and the Kubernetes manifests, for the tests of ``tests/deploy/``.

These are the parsers the tests check the files with; the checks are in the test modules, one
per topic: ``test_compose.py`` (the Compose file), ``test_worker_image.py`` (the worker's
Dockerfile), ``test_kubernetes.py`` (the manifests) and ``test_in_docker.py`` (the etcd image,
and the Compose file's members started from it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from lessor.etcd.settings import ENVIRONMENT
from tests.support.programs import ROOT

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


def compose_command() -> list[str] | None:
    """``docker compose``, else ``docker-compose``, else None."""
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
