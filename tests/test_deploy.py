"""`ferry deploy kserve`: the manifests validate offline, strictly, against KServe's CRD schemas (from
../shared/reference/kserve-crds/) and Kubernetes' own schemas (kubernetes-validate)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import pytest
import yaml

import ferry
from ferry.cli import main
from serving_helpers import linear_model

CRDS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "kserve-crds"
jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")


def strict(schema):
    """The CRD schema with unknown fields refused: Kubernetes prunes them silently, which hides a typo."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                if not node.get("x-kubernetes-preserve-unknown-fields"):
                    node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@cache
def crd_validator(kind: str):
    files = {"InferenceService": "serving.kserve.io_inferenceservices.yaml",
             "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
             "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml"}  # fmt: skip
    path = CRDS / files[kind]
    assert path.is_file(), f"KServe's CRDs are expected in {CRDS}"
    crd = yaml.safe_load(path.read_text())
    schema = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def errors(obj) -> list[str]:
    if obj["kind"] in ("InferenceService", "ServingRuntime", "ClusterServingRuntime"):
        return [e.message for e in crd_validator(obj["kind"]).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, "1.35", strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    ferry.save(linear_model(), repo / "linear_a" / "1", name="linear_a", version="1")
    ferry.save(linear_model(2.0), repo / "Second_Model" / "1", name="Second_Model", version="1")
    out = tmp_path_factory.mktemp("deploy")
    assert main(["deploy", "kserve", str(repo), "-o", str(out), "--storage-uri", "pvc://models/repo",
                 "--canary-percent", "10", "--min-replicas", "1", "--max-replicas", "4"]) == 0  # fmt: skip
    return out


def test_every_manifest_validates(written):
    files = sorted(written.rglob("*.yaml"))
    kinds = sorted(yaml.safe_load(p.read_text())["kind"] for p in files)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "InferenceService", "InferenceService",
                     "Service", "ServingRuntime"]  # fmt: skip
    for path in files:
        assert errors(yaml.safe_load(path.read_text())) == [], path


def test_inference_services_carry_the_options(written):
    isvc = yaml.safe_load((written / "inferenceservice-second-model.yaml").read_text())
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10 and predictor["maxReplicas"] == 4
    assert predictor["model"]["storageUri"] == "pvc://models/repo"
    assert predictor["model"]["modelFormat"] == {"name": "ferry"} and predictor["model"]["protocolVersion"] == "v2"
    runtime = yaml.safe_load((written / "servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    assert (
        container["args"][:3] == ["/mnt/models", "--model_name", "{{.Name}}"]
        and "v2" in runtime["spec"]["protocolVersions"]
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert 'pip install --no-cache-dir "ferry[image]"' in (written / "Dockerfile").read_text()


@pytest.mark.parametrize(
    "kind, change, message",
    [
        ("InferenceService", lambda o: o["spec"]["predictor"]["model"].update(runtim="ferry"), "runtim"),
        ("InferenceService", lambda o: o["spec"]["predictor"].update(scaleTarget="eight"), "eight"),
        ("ServingRuntime", lambda o: o["spec"].update(protocolVersion=["v2"]), "protocolVersion"),
        ("Deployment", lambda o: o["spec"].update(replicas="two"), "two"),
        ("HorizontalPodAutoscaler", lambda o: o["spec"].update(maxReplica=3), "maxReplica"),
    ],
)
def test_a_misspelled_field_or_a_wrong_type_is_caught(written, kind, change, message):
    path = next(p for p in written.rglob("*.yaml") if yaml.safe_load(p.read_text())["kind"] == kind)
    obj = yaml.safe_load(path.read_text())
    change(obj)
    found = errors(obj)
    assert found and any(message in e for e in found), found


def test_a_cluster_runtime_validates_too(tmp_path):
    from ferry.deploy import DeployOptions, runtime

    obj = runtime(DeployOptions(cluster_runtime=True))
    assert obj["kind"] == "ClusterServingRuntime" and errors(obj) == []
