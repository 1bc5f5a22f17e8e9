"""`ferry serve PATH` (a package or a model repository), `ferry serve --demo` and `ferry serve --demo ocr`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ferry.cli._options import DEMO_ROOT, demo_option


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--model-dir", "--model_dir", "model_dir", type=click.Path(exists=True, path_type=Path),
              help="The package or repository, as KServe passes it (instead of PATH).")  # fmt: skip
@click.option("--model-name", "--model_name", "model_name", default=None,
              help="Serve a single package under this name (KServe's InferenceService name).")  # fmt: skip
@demo_option("Serve a demo: the bundled digits model (--demo), or PP-OCR as a pipeline (--demo ocr).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Serve a package on Ray Serve (REST; pip install 'ferry[ray]'), batching with @serve.batch.",
)
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Serve replicas.")
@click.option("--max-replicas", type=click.IntRange(min=1), default=None,
              help="Autoscale Ray Serve replicas up to this many.")  # fmt: skip
@click.option("--ray-address", default=None, help="Join this Ray cluster (HOST:PORT) instead of starting one.")
@click.option("--http-port", "--http_port", "http_port", type=int, default=8000, show_default=True, envvar="PORT",
              help="Also from $PORT, which Knative (under KServe) sets.")  # fmt: skip
@click.option("--grpc-port", "--grpc_port", "grpc_port", type=int, default=8001, show_default=True,
              help="0 turns gRPC off.")  # fmt: skip
@click.option("--model-control", type=click.Choice(["none", "poll", "explicit"]), default="none", show_default=True)
@click.option("--poll-interval", type=click.FloatRange(min=0.05), default=5.0, show_default=True, help="Seconds.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Engine threads per model.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-delay-ms", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--timeout-ms", type=click.FloatRange(min=0), default=None, help="Drop requests queued longer (504).")
@click.option(
    "--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Batches of a model run at once."
)
@click.option("--api-key", default=None, help="Require this key (Authorization: Bearer KEY, or X-API-Key).")
@click.option("--api-key-file", type=click.Path(exists=True, path_type=Path), help="Read the key from a file.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=64.0, show_default=True)
@click.option("--metrics-port", type=int, default=None, help="Also serve /metrics alone on this port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes on the ports.")
@click.option("--spin/--no-spin", default=False, show_default=True, help="Let idle engine threads spin.")
@click.option("--hook", default=None, help="module:Class (or file.py:Class) with preprocess/postprocess.")
@click.option("--grace-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a client may take to send the request line and headers (408 after).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds a client may take to send the body once the headers are in (408 after).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds a keep-alive connection may sit idle between requests.",
)
@click.option(
    "--max-header-kb",
    type=click.FloatRange(min=1),
    default=64.0,
    show_default=True,
    help="Request line and headers together (431 past it).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=16),
    default=2048,
    show_default=True,
    help="Open HTTP connections; past it the longest-idle one is closed.",
)
@click.option(
    "--max-image-pixels",
    type=click.FloatRange(min=0.01),
    default=50.0,
    show_default=True,
    help="Millions of pixels an uploaded image may have; larger ones are refused before decoding.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate (chain): HTTPS and gRPC over TLS.",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM private key.")
@click.option(
    "--tls-client-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CA: clients must present a certificate it signed (mTLS).",
)
@click.option(
    "--trace-otlp-endpoint",
    default=None,
    help="Send OpenTelemetry spans over OTLP/HTTP here, e.g. http://127.0.0.1:4318/v1/traces.",
)
@click.option(
    "--trace-sample-rate",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="Share of new traces kept (a caller's traceparent decides for its own).",
)
def serve(
    path,
    model_dir,
    model_name,
    demo,
    host,
    use_ray,
    replicas,
    max_replicas,
    ray_address,
    http_port,
    grpc_port,
    model_control,
    poll_interval,
    backend,
    threads,
    max_batch_size,
    batch_delay_ms,
    max_queue,
    timeout_ms,
    instances,
    api_key,
    api_key_file,
    max_body_mb,
    metrics_port,
    workers,
    spin,
    hook,
    grace_seconds,
    header_timeout,
    body_timeout,
    idle_timeout,
    max_header_kb,
    max_connections,
    max_image_pixels,
    tls_cert,
    tls_key,
    tls_client_ca,
    trace_otlp_endpoint,
    trace_sample_rate,
) -> None:
    """Serve models over the Open Inference Protocol (HTTP/REST and gRPC)."""
    from ferry.serving.batching import BatchPolicy
    from ferry.serving.http_limits import ConnectionLimits
    from ferry.serving.server import ServeOptions, TlsFiles, run_workers
    from ferry.serving.service import Settings

    if model_dir is not None:
        if path is not None and path != model_dir:
            raise click.UsageError("give the model as PATH or as --model-dir, not both")
        path = model_dir
    if demo == "digits":
        path = DEMO_ROOT / "digits"
    elif demo == "ocr":
        from ferry.ocr import demo_repository

        path = demo_repository()
    if path is None:
        raise click.UsageError("give a package or a model repository folder (or --demo)")
    if use_ray:
        from ferry.integrations.ray import serve_package

        serve_package(path, host, http_port, ray_address, name=model_name, backend=backend, threads=threads or 1,
                      max_batch_size=max_batch_size, max_delay_ms=batch_delay_ms, replicas=replicas,
                      max_replicas=max_replicas)  # fmt: skip
        return
    if (tls_cert is None) != (tls_key is None) or (tls_client_ca is not None and tls_cert is None):
        raise click.UsageError("TLS needs --tls-cert and --tls-key together (and both for --tls-client-ca)")
    tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert is not None else None
    if api_key_file is not None:
        api_key = api_key_file.read_text(encoding="utf-8").strip()
    loopback = host in ("127.0.0.1", "localhost", "::1")
    settings = Settings(
        api_key=api_key,
        max_body_bytes=int(max_body_mb * (1 << 20)),
        model_control=model_control,
        admin_open=loopback,  # load/unload from other hosts always needs the key
    )
    if not loopback and model_control == "explicit" and api_key is None:
        raise click.UsageError("--model-control explicit on a non-loopback host needs --api-key")
    options = ServeOptions(
        path=path,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port or None,
        backend=backend,
        threads=threads,
        policy=BatchPolicy(max_batch_size, batch_delay_ms, (), max_queue, timeout_ms, instances),
        settings=settings,
        grace_seconds=grace_seconds,
        poll_interval=poll_interval,
        hook=hook,
        metrics_port=metrics_port,
        workers=workers,
        spinning=spin,
        max_image_pixels=int(max_image_pixels * 1e6),
        tls=tls,
        trace_otlp_endpoint=trace_otlp_endpoint,
        trace_sample_rate=trace_sample_rate,
        model_name=model_name,
        limits=ConnectionLimits(header_timeout, body_timeout, idle_timeout, int(max_header_kb * 1024), max_connections),
    )
    if workers > 1 and model_control == "explicit":
        raise click.UsageError("--model-control explicit needs --workers 1: each worker holds its own models")
    logging.getLogger("ferry.serve").setLevel(
        logging.INFO if logging.getLogger().level <= logging.INFO else logging.WARNING
    )
    run_workers(options)
