"""deploy/kubernetes: the manifests parse and carry the required fields; ``kubectl kustomize``
builds them when installed (a skip with the reason when not); the Deployment's probes, metrics,
graceful stop, mounts and references hold; they set exactly the ``LESSOR_ETCD_*`` variables
that ``lessor.etcd.settings`` reads; and the README explains what operators must set."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import PurePosixPath

import yaml

from lessor.etcd.settings import EtcdSettings
from tests.support import needs
from tests.support.deploy import (
    KUBERNETES,
    LESSOR_VARIABLES,
    METRICS_PORT,
    README,
    WORKER_DOCKERFILE,
    dockerfile_instructions,
    flags,
    load_manifests,
    sweeper_container,
    the_one,
    worker_parser,
)


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
        needs.missing("needs kubectl for `kubectl kustomize` (structure only here; Debian: "
                      "apt-get install kubernetes-client)")  # fmt: skip
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
