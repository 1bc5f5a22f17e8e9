"""`ferry deploy kserve PKG_OR_REPO -o DIR`: KServe and plain Kubernetes manifests, and a Dockerfile."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def deploy() -> None:
    """Write what a cluster needs to serve a package or a repository."""


@deploy.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@click.option("--name", default="ferry", show_default=True, help="ServingRuntime (and Deployment) name.")
@click.option("--image", default="ferry-serve:latest", show_default=True, help="The container image to run.")
@click.option("--storage-uri", default=None, help="Where KServe fetches the model from (s3://, gs://, pvc://...).")
@click.option("--min-replicas", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--max-replicas", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--scale-target",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Concurrent requests per replica before KServe adds one.",
)
@click.option(
    "--canary-percent",
    type=click.IntRange(0, 100),
    default=None,
    help="Share of traffic for the newest revision of each InferenceService.",
)
@click.option("--cpu", default="2", show_default=True)
@click.option("--memory", default="2Gi", show_default=True)
@click.option("--cluster-runtime", is_flag=True, help="A ClusterServingRuntime instead of a namespaced one.")
def kserve(source, output, name, image, storage_uri, min_replicas, max_replicas, scale_target, canary_percent,
           cpu, memory, cluster_runtime) -> None:  # fmt: skip
    """ServingRuntime + InferenceService per model, a Dockerfile, and Deployment/Service/HPA without KServe."""
    from ferry.deploy import DeployOptions, write_kserve

    if max_replicas < min_replicas:
        raise click.UsageError("--max-replicas must be at least --min-replicas")
    options = DeployOptions(name, image, storage_uri, min_replicas, max_replicas, scale_target, canary_percent,
                            cpu, memory, cluster_runtime)  # fmt: skip
    for path in write_kserve(source, output, options):
        click.echo(f"wrote {path}")
