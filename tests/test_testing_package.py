"""lessor.testing: apart from the product, importable without side effects, and reachable for
one release through the old paths (with a DeprecationWarning naming the new place)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import lessor.testing
from lessor.testing import MemberStatus, isolation, leader_of
from lessor.testing.isolation import TAG_PREFIX, rule_tag

ROOT = Path(__file__).resolve().parents[1]

# old module -> {name: the module it lives in now}
MOVED_MODULES = {
    "lessor.etcd.local": {
        "LocalEtcd": "lessor.testing.local",
        "ServerTLS": "lessor.testing.local",
        "find_etcd_binary": "lessor.testing.binary",
        "etcd_version": "lessor.testing.binary",
        "SAFE_LEASE_VERSION": "lessor.testing.binary",
        "installed_etcd_binary": "lessor.testing.binary",
        "free_port": "lessor.testing.process",
        "free_ports": "lessor.testing.process",
        "tuning_flags": "lessor.testing.process",
        "wait_healthy": "lessor.testing.process",
    },
    "lessor.etcd.cluster": {
        "LocalEtcdCluster": "lessor.testing.cluster",
        "Member": "lessor.testing.cluster",
        "MemberStatus": "lessor.testing.leader",
    },
    "lessor.etcd.proxy": {"FaultProxy": "lessor.testing.proxy"},
    "lessor.history": {
        "History": "lessor.testing.history",
        "Holding": "lessor.testing.history",
        "Overlap": "lessor.testing.history",
        "find_overlaps": "lessor.testing.history",
        "find_token_inversions": "lessor.testing.history",
    },
    "lessor.etcd.container": {
        "EtcdContainer": "lessor.testing.container",
        "docker_unavailable": "lessor.testing.container",
        "IMAGE_DIR": "lessor.testing.image",
        "LOCAL_IMAGE": "lessor.testing.image",
        "EtcdImage": "lessor.testing.image",
        "build_etcd_image": "lessor.testing.image",
        "etcd_image": "lessor.testing.image",
        "write_build_context": "lessor.testing.image",
        "find_image_etcd_binary": "lessor.testing.image",
    },
}


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_warns_and_gives_the_same_objects(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if old == "lessor.etcd.container" and importlib.util.find_spec("testcontainers") is None:
        pytest.skip("the testcontainers package is not installed")
    monkeypatch.delitem(sys.modules, old, raising=False)  # so that it is imported afresh
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: use lessor\.testing"):
        module = importlib.import_module(old)
    for name, new in MOVED_MODULES[old].items():
        assert getattr(module, name) is getattr(importlib.import_module(new), name), name


@pytest.mark.parametrize("name", ["LocalEtcd", "LocalEtcdCluster", "find_etcd_binary"])
def test_an_old_name_on_lessor_etcd_warns_and_gives_the_same_object(name: str) -> None:
    import lessor.etcd  # noqa: PLC0415

    with pytest.warns(DeprecationWarning, match=rf"lessor\.etcd\.{name} is deprecated: use "):
        old = getattr(lessor.etcd, name)
    assert old is getattr(lessor.testing, name)
    assert name not in lessor.etcd.__all__


def test_every_public_name_of_lessor_testing_resolves() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in lessor.testing.__all__:
            if name in ("EtcdContainer", "docker_unavailable") and (
                importlib.util.find_spec("testcontainers") is None
            ):
                continue
            assert getattr(lessor.testing, name) is not None, name
    assert sorted(lessor.testing.__all__) == sorted(lessor.testing._MODULES)
    with pytest.raises(AttributeError):
        _ = lessor.testing.no_such_name  # type: ignore[attr-defined]


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_lessor_and_lessor_etcd_loads_no_test_harness() -> None:
    loaded = _fresh(
        "import sys, lessor, lessor.etcd; print(sorted(m for m in sys.modules if 'testing' in m "
        "or 'testcontainers' in m or m in ('lessor.history', 'lessor.etcd.local', "
        "'lessor.etcd.cluster', 'lessor.etcd.container', 'lessor.etcd.proxy')))"
    )
    assert loaded == "[]"


def test_importing_lessor_testing_changes_no_environment() -> None:
    if importlib.util.find_spec("testcontainers") is None:
        pytest.skip("the testcontainers package is not installed")
    changed = _fresh(
        "import os; before = dict(os.environ); import lessor.testing.container, lessor.testing; "
        "lessor.testing.EtcdContainer; lessor.testing.LocalEtcdCluster; "
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    assert changed == "[]"


def test_the_deploy_dockerfile_is_the_packaged_one() -> None:
    from lessor.testing.image import IMAGE_DIR  # noqa: PLC0415

    packaged = IMAGE_DIR / "Dockerfile"
    assert packaged.is_file() and packaged.is_relative_to(Path(lessor.testing.__file__).parent)
    deploy = ROOT / "deploy" / "etcd-image" / "Dockerfile"
    assert deploy.resolve() == packaged.resolve()


def _status(member: int, leader: int, term: int) -> MemberStatus:  # index, revision: 0
    return MemberStatus(member, leader, term, 0, 0)


def test_the_leader_is_who_claims_it_in_the_latest_term() -> None:
    assert leader_of({}) is None
    assert leader_of({0: _status(10, 0, 2), 1: _status(11, 0, 2)}) is None  # an election
    # Member 0, cut off, still believes it leads term 2; the others elected member 2 in term 3.
    statuses = {0: _status(10, 10, 2), 1: _status(11, 12, 3), 2: _status(12, 12, 3)}
    assert leader_of(statuses) == 2
    assert leader_of({k: v for k, v in statuses.items() if k != 2}) is None
    assert leader_of({"dc0": _status(10, 10, 5)}) == "dc0"


def test_a_rule_is_stale_only_when_its_process_is_gone_from_our_pid_namespace() -> None:
    """Rules live in the network namespace, which other PID namespaces may share (a chroot
    run with its own PID namespace; a container on the host's network): a pid taken in one of
    those says nothing in ours. (A host run once purged a live chroot run's rules so.)"""
    ours = isolation._pid_namespace()
    gone = _a_pid_that_is_gone()
    assert rule_tag(f"{os.getpid()}-0a1b2c3d") == f"{TAG_PREFIX}{os.getpid()}-0a1b2c3d-ns{ours}"
    assert isolation.stale(f"{TAG_PREFIX}{gone}-0a1b2c3d-ns{ours}", ours)
    assert not isolation.stale(f"{TAG_PREFIX}{os.getpid()}-0a1b2c3d-ns{ours}", ours)
    assert not isolation.stale(f"{TAG_PREFIX}{gone}-0a1b2c3d-ns1", ours)  # another namespace
    assert isolation.stale(f"{TAG_PREFIX}{gone}-0a1b2c3d", ours)  # before namespaces: as then
    assert not isolation.stale("lessor-cluster-x", ours)


def _a_pid_that_is_gone() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
