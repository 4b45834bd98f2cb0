"""deploy/k8s validates offline against Kubernetes' schemas (kubernetes-validate, strict) and has what the
team shape needs: a Deployment per pool, a GPU for inference, the migration Job, probes, PDBs, an HPA."""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.processes import ROOT

K8S = ROOT / "deploy" / "k8s"


def _resources() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_every_manifest_validates_against_the_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for _file, doc in _resources():
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_the_kustomization_lists_every_file_and_takes_secrets_from_files():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {name for name, _ in _resources()}
    (generator,) = kustomization["secretGenerator"]
    assert all("=secrets/" in entry for entry in generator["files"])
    for _, doc in _resources():
        assert doc["kind"] != "Secret"  # no secret values in the manifests


def test_pools_probes_gpu_disruption_budgets_and_autoscaling():
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _resources()}
    deployments = {name: doc for (kind, name), doc in docs.items() if kind == "Deployment"}
    assert set(deployments) == {"cairn-web", "cairn-worker-ingest", "cairn-worker-index", "cairn-worker-inference",
                                "cairn-beat"}
    for name, doc in deployments.items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["CAIRN_SECRET_KEY_FILE"].startswith("/run/secrets/"), name

    web = deployments["cairn-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["args"] == ["web"]

    for single in ("cairn-worker-index", "cairn-beat"):
        assert deployments[single]["spec"]["replicas"] == 1
        assert deployments[single]["spec"]["strategy"]["type"] == "Recreate"  # never two at once

    inference = deployments["cairn-worker-inference"]["spec"]["template"]["spec"]["containers"][0]
    assert inference["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"mountPath": "/models", "name": "models", "readOnly": True} in inference["volumeMounts"]

    job = docs[("Job", "cairn-migrate")]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]

    budgets = {doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
               for (kind, _), doc in docs.items() if kind == "PodDisruptionBudget"}
    assert {"web", "worker-ingest", "worker-inference"} <= budgets

    hpa = docs[("HorizontalPodAutoscaler", "cairn-worker-ingest")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cairn-worker-ingest"

    config = docs[("ConfigMap", "cairn-config")]["data"]
    assert config["CAIRN_METRICS_DIR"].startswith("/tmp/")  # per pod, not on the shared volume
