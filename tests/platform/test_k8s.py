"""The Kubernetes manifests (infra/k8s, docs/kubernetes.md), checked offline: every object validates against the
Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail), the kustomizations render (``kubectl
kustomize`` when kubectl is installed, else the resources they list, assembled here), every ``MLPLATFORM_*`` name is
a setting, every ``mlplatform`` command the pods run parses (``<command> --help`` through the real typer app, with
the manifest's own options: an unknown option fails), and the probes point at routes the service has."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
# the oldest Kubernetes the manifests claim (CronJob timeZone is GA from 1.27) and the newest the schemas know
K8S_VERSIONS = ("1.27", kubernetes_validate.latest_version())
WORKLOADS = {"Deployment", "CronJob"}


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def _assemble(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists (resources, recursively), without its transformations: what the test
    validates when kubectl is not installed."""
    out: list[dict[str, Any]] = []
    for entry in _kustomization(folder).get("resources", []):
        path = (folder / entry).resolve()
        out += _assemble(path) if path.is_dir() else _docs(path.read_text())
    return out


def _render(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return _assemble(folder)
    res = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"kubectl kustomize {folder}: {res.stderr}"
    return _docs(res.stdout)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def _containers(objs: list[dict[str, Any]]):
    for obj in objs:
        if obj["kind"] in WORKLOADS:
            for container in _pod_spec(obj)["containers"]:
                yield obj, container


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _render(K8S / "base")


def test_the_layout_is_there():
    assert K8S / "base" in KUSTOMIZATIONS
    assert len(KUSTOMIZATIONS) >= 2, "the base and at least one overlay"
    assert len(MANIFESTS) >= 10


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_against_the_kubernetes_schemas(path):
    docs = _docs(path.read_text())
    assert docs, f"{path} holds no object"
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_kubernetes_would():
    """The check above can fail: an unknown field, a wrong type and a missing required field are each refused."""
    pdb = _docs((K8S / "base" / "serving-pdb.yaml").read_text())[0]
    bad = [
        {**pdb, "spec": {**pdb["spec"], "maxUnavailabel": 1}},
        {**pdb, "spec": {**pdb["spec"], "selector": "app=mlplatform"}},
    ]
    service = _docs((K8S / "base" / "serving-service.yaml").read_text())[0]
    bad.append({**service, "spec": {**service["spec"], "ports": [{"name": "http"}]}})  # no port
    for doc in bad:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_renders_to_valid_objects(folder):
    for entry in _kustomization(folder).get("resources", []):
        assert (folder / entry).exists(), f"{folder}/kustomization.yaml lists {entry}, which does not exist"
    objs = _render(folder)
    assert objs
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    for obj in objs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_base_holds_the_platform(base):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in base)
    assert kinds == sorted([
        ("ConfigMap", "mlplatform-settings"),
        ("Service", "mlplatform-redis"),
        ("PersistentVolumeClaim", "mlplatform-data"),
        ("Deployment", "mlplatform-serving"),
        ("Service", "mlplatform-serving"),
        ("HorizontalPodAutoscaler", "mlplatform-serving"),
        ("PodDisruptionBudget", "mlplatform-serving"),
        ("Deployment", "mlplatform-stream"),
        ("Deployment", "mlplatform-queue-scorer"),
        ("CronJob", "mlplatform-materialize"),
        ("CronJob", "mlplatform-pipeline-daily"),
        ("CronJob", "mlplatform-score-daily"),
    ])
    assert not [o for o in base if o["kind"] == "Secret"], "no kustomization may carry (and so overwrite) the Secret"


def _by(objs, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def test_the_service_pods_are_wired_together(base):
    from serving.routes.health import router

    routes = {r.path for r in router.routes}
    deployment = _by(base, "Deployment", "mlplatform-serving")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        obj = _by(base, kind, "mlplatform-serving")
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector and selector.items() <= pod_labels.items(), f"the {kind} selects no serving pod"
    hpa = _by(base, "HorizontalPodAutoscaler", "mlplatform-serving")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "mlplatform-serving"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = _by(base, "ConfigMap", "mlplatform-settings")["data"]
    assert ports["http"] == int(config["MLPLATFORM_SERVING_PORT"])
    assert _by(base, "Service", "mlplatform-serving")["spec"]["ports"][0]["targetPort"] in ports
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in routes, f"{probe}: no such route in serving/routes/health.py"
        assert container[probe]["httpGet"]["port"] in ports
    # every pod reads the same settings and secrets and mounts the shared data folder where the settings say
    for obj, c in _containers(base):
        refs = {next(iter(r)): r[next(iter(r))]["name"] for r in c["envFrom"]}
        assert refs == {"configMapRef": "mlplatform-settings", "secretRef": "mlplatform-secrets"}, obj["metadata"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in _pod_spec(obj)["volumes"]}
        assert volumes[mounts[config["MLPLATFORM_DATA_DIR"]]]["persistentVolumeClaim"]["claimName"] == \
            "mlplatform-data"


def test_the_shared_volume_and_the_single_writers(base):
    pvc = _by(base, "PersistentVolumeClaim", "mlplatform-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cronjobs = [o for o in base if o["kind"] == "CronJob"]
    assert {c["metadata"]["name"] for c in cronjobs} >= {"mlplatform-materialize", "mlplatform-pipeline-daily"}
    for cronjob in cronjobs:
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", cronjob["metadata"]["name"]
    # materialize takes no lock of its own: its schedule leaves out the hours the daily pipeline (which
    # materializes too) starts in
    pipeline_hour = int(_by(base, "CronJob", "mlplatform-pipeline-daily")["spec"]["schedule"].split()[1])
    hours = _by(base, "CronJob", "mlplatform-materialize")["spec"]["schedule"].split()[1]
    covered = set()
    for part in hours.split(","):
        lo, _, hi = part.partition("-")
        covered |= set(range(int(lo), int(hi or lo) + 1))
    assert pipeline_hour not in covered and pipeline_hour + 1 not in covered


def test_every_container_has_requests_and_limits(base):
    def mib(q: str) -> float:
        units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
        return float(q[:-2]) * units[q[-2:]]

    for obj, c in _containers(base):
        res = c["resources"]
        assert {"cpu", "memory"} <= res["requests"].keys(), obj["metadata"]["name"]
        assert "memory" in res["limits"], obj["metadata"]["name"]
        assert mib(res["limits"]["memory"]) >= mib(res["requests"]["memory"]), obj["metadata"]["name"]


@pytest.mark.parametrize(("name", "verb"), [("mlplatform-stream", "run"), ("mlplatform-queue-scorer", "score")])
def test_the_stream_consumers_share_one_group_under_their_pod_names(base, name, verb):
    deployment = _by(base, "Deployment", name)
    assert deployment["spec"]["replicas"] >= 2
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["command"][:3] == ["mlplatform", "stream", verb]
    assert c["command"][c["command"].index("--consumer") + 1] == "$(POD_NAME)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


# --- names the manifests use exist in the code --------------------------------------------------------------------
def _all_texts() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(K8S.rglob("*.yaml"))}


def test_every_mlplatform_variable_is_a_setting():
    from mlplatform.settings import Settings

    known = {f"MLPLATFORM_{name.upper()}" for name in Settings.model_fields}
    used: dict[str, set[str]] = {}
    for path, text in _all_texts().items():  # comments too: a misspelt name in a comment misleads as much
        for name in re.findall(r"MLPLATFORM_[A-Z0-9_]+", text):
            used.setdefault(name, set()).add(str(path.relative_to(K8S)))
    assert {"MLPLATFORM_DATA_DIR", "MLPLATFORM_REDIS_ADDR", "MLPLATFORM_SERVING_API_KEY"} <= used.keys()
    unknown = {n: sorted(where) for n, where in used.items() if n not in known}
    assert not unknown, f"not settings (mlplatform/settings.py): {unknown}"
    # the oracle is not vacuous: a name that is no field is caught
    assert "MLPLATFORM_SERVING_WORKERS" not in known


def test_secrets_are_only_in_the_secret_template_and_only_as_placeholders():
    secret_names = {"MLPLATFORM_REDIS_ADDR", "MLPLATFORM_SERVING_API_KEY", "MLPLATFORM_WEBHOOKS"}
    template = K8S / "secret.template.yaml"
    (secret,) = _docs(template.read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "mlplatform-secrets"
    assert set(secret["stringData"]) == secret_names
    for name, value in secret["stringData"].items():
        assert "REPLACE_WITH_" in value, f"{name} in the template must be a placeholder"
    for folder in KUSTOMIZATIONS:
        listed = [(folder / r).resolve() for r in _kustomization(folder).get("resources", [])]
        assert template.resolve() not in listed
    for path in MANIFESTS:
        for doc in _docs(path.read_text()):
            if doc["kind"] == "ConfigMap":
                assert not secret_names & doc["data"].keys(), f"{path}: a secret in a ConfigMap"
            for c in (_pod_spec(doc)["containers"] if doc["kind"] in WORKLOADS else []):
                assert not secret_names & {e["name"] for e in c.get("env", [])}, f"{path}: a secret inline"


@pytest.fixture(scope="module")
def app():
    from cli import build_app

    return build_app()


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for folder in KUSTOMIZATIONS:
        for obj, c in _containers(_render(folder)):
            if c["command"][0] == "mlplatform":
                out.append((f"{folder.name}/{obj['metadata']['name']}", c["command"][1:]))
    return out


def test_the_pods_run_the_commands_the_brief_names():
    commands = {" ".join(args[:3]) for _, args in _commands()}
    assert {"serve --workers 1", "stream run --consumer", "stream score --consumer", "materialize",
            "pipeline run daily"} <= commands


@pytest.mark.parametrize(("where", "args"), _commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_command_a_pod_runs_exists_with_its_options(app, where, args):
    """``mlplatform <args> --help`` in-process: click parses every option first (an unknown one exits 2), then
    --help prints the command's usage without running it."""
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, f"{where}: `mlplatform {' '.join(args)}`: {res.output}"
    words = [a for a in args if not a.startswith("-")][:2]
    assert re.search(r"Usage: \S+ " + re.escape(words[0]), res.output), res.output


def test_the_command_check_can_fail(app):
    from typer.testing import CliRunner

    for args in (["serve", "--worker", "1"], ["stream", "walk"], ["materialise"]):
        assert CliRunner().invoke(app, [*args, "--help"]).exit_code != 0, args
