"""`ferry deploy kserve`: what a Kubernetes cluster needs to run `ferry serve` on a package or a repository.

Written to one folder:
- `servingruntime.yaml`: a KServe `ServingRuntime` (or `ClusterServingRuntime`) whose container runs
  `ferry serve /mnt/models` on KServe's model mount, with the Open Inference Protocol over REST (8080)
  and gRPC (8081), and health/readiness probes on `/v2/health/live` and `/v2/health/ready`;
- `inferenceservice-<model>.yaml`: a KServe `InferenceService` per model name (`modelFormat: ferry`,
  `protocolVersion: v2`, storage URI, resources, min/max replicas, autoscaling target, canary percent);
- `Dockerfile`: an image with ferry and the extras the packages need;
- `kubernetes/`: a plain `Deployment`, `Service` and `HorizontalPodAutoscaler` for clusters without KServe.

Manifests are YAML (PyYAML, the `deploy` extra) and are validated in the tests: KServe objects against
KServe's CRD schemas, strictly (an unknown field is an error), plain objects with `kubernetes-validate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError
from ferry.files import atomic_write

HTTP_PORT, GRPC_PORT = 8080, 8081
MOUNT = "/mnt/models"


@dataclass(frozen=True)
class DeployOptions:
    name: str = "ferry"  # the runtime's name, and the plain Deployment's
    image: str = "ferry-serve:latest"
    storage_uri: str | None = None  # where KServe fetches the package or repository from (s3://, gs://, pvc://)
    min_replicas: int = 1
    max_replicas: int = 3
    scale_target: int = 8  # concurrent requests per replica (KServe's default metric)
    canary_percent: int | None = None  # send this share to the newest version of the InferenceService
    cpu: str = "2"
    memory: str = "2Gi"
    cluster_runtime: bool = False
    extras: tuple[str, ...] = field(default_factory=tuple)


def models_of(path: Path) -> list[str]:
    """The model names `ferry serve path` would serve (a package's own, or a repository's folders)."""
    from ferry.serving.repository import discover, discover_ensembles, is_package

    if is_package(path):
        import ferry

        return [ferry.load(path).name]
    from ferry.serving.batching import BatchPolicy

    names = [s.name for s in discover(path, BatchPolicy())] + [e.name for e in discover_ensembles(path)]
    if not names:
        raise ConfigError(f"{path}: no models to deploy")
    return names


def extras_for(path: Path) -> list[str]:
    """The pip extras the packages under `path` need at serve time."""
    extras = {"image"}  # decoding uploaded images is on every server's path
    for manifest in [path / "ferry.json"] if (path / "ferry.json").is_file() else path.glob("*/*/ferry.json"):
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        tuning = json.dumps(doc.get("tuning", {})) + json.dumps(doc.get("compression", {}))
        if "openvino" in tuning:
            extras.add("openvino")
    if any((p / "config.json").is_file() and "ocr." in (p / "config.json").read_text() for p in path.glob("*")):
        extras.add("ocr")
    return sorted(extras)


def runtime(options: DeployOptions) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}, "periodSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "kserve-container",
        "image": options.image,
        "command": ["ferry", "serve"],
        "args": [
            MOUNT,
            "--model_name",
            "{{.Name}}",  # KServe puts the InferenceService's name here: the model answers under it
            "--host",
            "0.0.0.0",
            "--http-port",
            str(HTTP_PORT),
            "--grpc-port",
            str(GRPC_PORT),
            "--grace-seconds",
            "25",
        ],  # fmt: skip
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT}},
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": {"cpu": options.cpu, "memory": options.memory},
        },  # fmt: skip
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime" if options.cluster_runtime else "ServingRuntime",
        "metadata": {"name": options.name},
        "spec": {
            "supportedModelFormats": [{"name": "ferry", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [container],
        },
    }


def inference_service(model: str, options: DeployOptions) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "scaleMetric": "concurrency",
        "scaleTarget": options.scale_target,
        "model": {
            "modelFormat": {"name": "ferry"},
            "protocolVersion": "v2",
            "runtime": options.name,
            "resources": {"requests": {"cpu": options.cpu, "memory": options.memory}},
        },
    }
    if options.storage_uri:
        predictor["model"]["storageUri"] = options.storage_uri
    if options.canary_percent is not None:
        predictor["canaryTrafficPercent"] = options.canary_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": _dns_name(model)},
        "spec": {"predictor": predictor},
    }


def plain(options: DeployOptions) -> list[dict[str, Any]]:
    """Deployment, Service and HorizontalPodAutoscaler running the same container without KServe; the
    package or repository is expected in a volume at /mnt/models (a PVC named `<name>-models`)."""
    ports = [{"containerPort": HTTP_PORT, "name": "http"}, {"containerPort": GRPC_PORT, "name": "grpc"}]
    mounts = [{"name": "models", "mountPath": MOUNT}]
    container = {**runtime(options)["spec"]["containers"][0], "name": "ferry", "ports": ports, "volumeMounts": mounts}
    labels = {"app": options.name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": options.name, "labels": labels},
        "spec": {
            "replicas": options.min_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": 30,
                    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": f"{options.name}-models"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": options.name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
            ],
        },  # fmt: skip
    }
    cpu_target = {"type": "Utilization", "averageUtilization": 70}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": options.name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": cpu_target}}],
        },
    }
    return [deployment, service, hpa]


def dockerfile(extras: list[str]) -> str:
    spec = f"ferry[{','.join(extras)}]" if extras else "ferry"
    return (
        "# ferry serve in a container: KServe mounts the model at /mnt/models and runs the ServingRuntime's args.\n"
        "FROM python:3.11-slim\n"
        f'RUN pip install --no-cache-dir "{spec}"\n'
        "EXPOSE 8080 8081\n"
        'ENTRYPOINT ["ferry", "serve"]\n'
        'CMD ["/mnt/models", "--host", "0.0.0.0", "--http-port", "8080", "--grpc-port", "8081"]\n'
    )


def write_kserve(source: Path, out: Path, options: DeployOptions) -> list[Path]:
    """Write the manifests and the Dockerfile for serving `source` (a package or a repository)."""
    models = models_of(source)
    extras = sorted(set(options.extras) | set(extras_for(source)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "kubernetes").mkdir(exist_ok=True)
    written = [_dump(out / "servingruntime.yaml", runtime(options))]
    written += [_dump(out / f"inferenceservice-{_dns_name(m)}.yaml", inference_service(m, options)) for m in models]
    for obj in plain(options):
        written.append(_dump(out / "kubernetes" / f"{obj['kind'].lower()}.yaml", obj))
    with atomic_write(out / "Dockerfile", "w") as f:
        f.write(dockerfile(extras))
    written.append(out / "Dockerfile")
    return written


def _dns_name(name: str) -> str:
    """Kubernetes object names: lower case letters, digits and '-', at most 63."""
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return cleaned[:63] or "model"


def _dump(path: Path, obj: dict[str, Any]) -> Path:
    try:
        import yaml
    except ImportError:
        raise ConfigError("writing Kubernetes manifests needs PyYAML: pip install 'ferry[deploy]'") from None
    with atomic_write(path, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False)
    return path
