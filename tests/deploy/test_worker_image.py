"""deploy/worker/Dockerfile: the worker image is built as a non-root user from what the
repository holds, without etcd, and both the Compose file and the manifests run it."""

from __future__ import annotations

import yaml

from tests.support.deploy import (
    DEPLOY,
    KUBERNETES,
    METRICS_PORT,
    WORKER_DOCKERFILE,
    WORKER_MODULE,
    WORKER_REPOSITORY,
    dockerfile_instructions,
    exec_form,
    load_compose,
    sweeper_container,
    the_one,
    worker_services,
)
from tests.support.programs import ROOT


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
