"""Running the servers: HTTP (uvicorn) and gRPC (grpc.aio) in one asyncio loop, with a graceful stop.

On SIGTERM or SIGINT: stop accepting, let every request already received finish (up to the grace
period), then exit.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import uvicorn

from ferry.errors import ConfigError
from ferry.processing.image import MAX_PIXELS
from ferry.serving.batching import BatchPolicy
from ferry.serving.grpc.service import GrpcService
from ferry.serving.http_app import build_app, metrics_app
from ferry.serving.http_limits import ConnectionLimits, protocol_class, usable_connections
from ferry.serving.metrics import Metrics
from ferry.serving.registry import Registry
from ferry.serving.service import Service, Settings
from ferry.serving.stages import PipelineModel
from ferry.serving.tracing import Tracing

log = logging.getLogger("ferry.serve")


@dataclass(frozen=True)
class TlsFiles:
    """HTTPS and gRPC over TLS; with `client_ca`, clients must show a certificate it signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def uvicorn_options(self) -> dict[str, Any]:
        import ssl

        return {
            "ssl_certfile": str(self.cert),
            "ssl_keyfile": str(self.key),
            "ssl_ca_certs": str(self.client_ca) if self.client_ca else None,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if self.client_ca else ssl.CERT_NONE,
        }

    def grpc_credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass
class ServeOptions:
    path: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    backend: str = "auto"
    threads: int | None = None
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    settings: Settings = field(default_factory=Settings)
    grace_seconds: float = 30.0
    poll_interval: float = 5.0
    hook: str | None = None  # module:Class with preprocess/postprocess
    metrics_port: int | None = None  # also serve /metrics alone on this port
    workers: int = 1  # processes sharing the ports (SO_REUSEPORT), each with its own models and queues
    spinning: bool = False  # let idle engine threads spin (see Config.set_spinning)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    max_image_pixels: int = MAX_PIXELS  # images larger than this are refused before decoding
    tls: TlsFiles | None = None
    trace_otlp_endpoint: str | None = None  # spans to this OTLP/HTTP collector (plain data: workers get a copy)
    trace_sample_rate: float = 1.0
    tracer: Any = None  # an OpenTelemetry tracer to use instead (tests pass the SDK's in-memory one)
    model_name: str | None = None  # serve a single package under this name (KServe's --model_name)


def build_service(options: ServeOptions) -> Service:
    hook = None
    if options.hook:
        from ferry.serving.pipeline import load_hook

        hook = load_hook(options.hook)
    metrics = Metrics()
    registry = Registry(
        options.path,
        options.policy,
        options.backend,
        options.threads,
        metrics,
        hook,
        options.spinning,
        options.max_image_pixels,
        options.model_name,
    )
    if options.tracer is not None:
        tracing = Tracing(options.tracer)
    elif options.trace_otlp_endpoint:
        tracing = Tracing.otlp(options.trace_otlp_endpoint, options.trace_sample_rate)
    else:
        tracing = Tracing.off()
    registry.tracer = tracing.tracer
    service = Service(registry, options.settings, metrics, tracing=tracing)
    failures = service.registry.load_all()
    if failures and not service.registry.all_models() and options.settings.model_control == "none":
        # Nothing to serve and nothing will ever be loaded: say why and stop, rather than answer 503 forever.
        raise ConfigError("no model could be loaded:\n  " + "\n  ".join(failures))
    return service


def _listen(host: str, port: int, shared: bool, flag: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit this: without it, a response written in two parts (headers, body)
    # waits out the client's delayed ACK, some 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise port_error(host, port, flag, exc.strerror or str(exc)) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def port_error(host: str, port: int, flag: str, reason: str) -> ConfigError:
    return ConfigError(f"cannot listen on {host}:{port} ({reason}); choose another port with {flag}")


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when it is installed (uvicorn[standard] brings it): its event loop costs a
    request about half the CPU of asyncio's own, and that CPU is taken from the engine threads."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def run_workers(options: ServeOptions) -> None:
    """`options.workers` processes serve the same ports; this one is the first, the rest are children."""
    if options.workers <= 1:
        run_loop(serve(options))
        return
    ctx = multiprocessing.get_context("spawn")
    me = os.getpid()
    children = [ctx.Process(target=_child, args=(options, me), daemon=False) for _ in range(options.workers - 1)]
    for child in children:
        child.start()
    try:
        run_loop(serve(options))
    finally:
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(options.grace_seconds + 5)


def _child(options: ServeOptions, parent: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    exit_with_parent(parent)
    run_loop(serve(options, announce=False))


def exit_with_parent(parent: int) -> None:
    """A worker ends when the process that started it (`parent`) dies, even by SIGKILL: otherwise it keeps
    the shared ports and answers with old models after a restart. Linux sends SIGTERM through
    PR_SET_PDEATHSIG; a thread that compares the parent's pid covers the rest, including a parent that
    died before this ran."""
    import ctypes
    import threading
    import time

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ferry-parent-watch", daemon=True).start()


async def _start_grpc(options: ServeOptions, service: Service, shared: bool) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", options.settings.max_body_bytes),
            ("grpc.so_reuseport", 1 if shared else 0),
        ]
    )
    server.add_generic_rpc_handlers((GrpcService(service).handler(),))
    address = f"{options.host}:{options.grpc_port}"
    try:
        if options.tls is not None:
            bound = server.add_secure_port(address, options.tls.grpc_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when the port is taken
        raise port_error(options.host, options.grpc_port, "--grpc-port", str(exc)) from None
    if not bound:
        raise port_error(options.host, options.grpc_port, "--grpc-port", "address in use")
    await server.start()
    return server


async def serve(
    options: ServeOptions,
    ready: asyncio.Event | None = None,
    announce: bool = True,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, or until `stop` is set (servers run inside another program or a test)."""
    service = build_service(options)
    shared = options.workers > 1
    limits = replace(options.limits, max_connections=usable_connections(options.limits.max_connections))
    config = uvicorn.Config(
        build_app(service),
        host=options.host,
        port=options.http_port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # ferry reads no client address; the middleware cost every request a little
        timeout_graceful_shutdown=int(options.grace_seconds),
        lifespan="off",
        http=protocol_class(limits),
        timeout_keep_alive=int(limits.idle_timeout),
        **(options.tls.uvicorn_options() if options.tls else {}),
    )
    http_socket = _listen(options.host, options.http_port, shared, "--http-port")
    http = uvicorn.Server(config)
    http.install_signal_handlers = lambda: None  # ours below stop both servers
    grpc_server = await _start_grpc(options, service, shared) if options.grpc_port is not None else None

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests run servers in threads)

    poller = None
    if options.settings.model_control == "poll":
        from ferry.serving.poll import poll_repository

        poller = asyncio.create_task(poll_repository(service.registry, options.poll_interval, stop))
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    metrics_server = None
    if options.metrics_port is not None:
        metrics_server = uvicorn.Server(
            uvicorn.Config(metrics_app(service), host=options.host, port=options.metrics_port, log_level="warning",
                           access_log=False, lifespan="off", **(options.tls.uvicorn_options() if options.tls else {}))
        )  # fmt: skip
        metrics_server.install_signal_handlers = lambda: None
        metrics_task = asyncio.create_task(
            metrics_server.serve(sockets=[_listen(options.host, options.metrics_port, shared, "--metrics-port")])
        )
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        await http_task  # it failed to start: raise why
    if announce:
        _announce(options, service)
    if ready is not None:
        ready.set()
    await stop.wait()

    log.info("stopping: finishing requests in flight (grace %.0f s)", options.grace_seconds)
    http.should_exit = True
    if poller is not None:
        await poller
    # Requests still waiting when the grace period ends are cancelled; they answer 503, not 500.
    stopping = loop.call_later(max(options.grace_seconds - 0.05, 0), setattr, service, "stopping", True)
    if grpc_server is not None:
        await grpc_server.stop(options.grace_seconds)
    await http_task
    stopping.cancel()
    service.stopping = True
    if metrics_server is not None:
        metrics_server.should_exit = True
        await metrics_task
    await asyncio.to_thread(service.registry.close)
    log.info("stopped")


def _announce(options: ServeOptions, service: Service) -> None:
    scheme = "https" if options.tls else "http"
    base = f"{scheme}://{options.host}:{options.http_port}"
    for model in service.registry.all_models():
        log.warning("serving %s version %s (%s)", model.name, model.version, model.predictor.backend)
    for row in service.registry.index():
        if row["state"] != "READY":
            log.warning("not serving %s version %s: %s", row["name"], row["version"], row["reason"])
    metrics = f"{scheme}://{options.host}:{options.metrics_port}" if options.metrics_port else base
    log.warning("HTTP  %s/v2  (metrics at %s/metrics)", base, metrics)
    if options.workers > 1:
        log.warning("%d worker processes share the ports", options.workers)
    if options.grpc_port is not None:
        log.warning("gRPC  %s:%d  (inference.GRPCInferenceService)", options.host, options.grpc_port)
    pipelines = [e for e in service.registry.ensembles.values() if isinstance(e, PipelineModel)]
    if pipelines and list(pipelines[0].spec.inputs.values()) == ["BYTES"]:  # a file in: the upload route
        log.warning("try:  curl -s %s/v2/models/%s/predict -F file=@page.png", base, pipelines[0].name)
        return
    models = service.registry.all_models()
    if models:
        m = models[0]
        spec = m.package.signature.inputs[0]
        shape = [1 if not isinstance(d, int) else d for d in spec.shape]
        example = (
            f"curl -s {base}/v2/models/{m.name}/infer -H 'Content-Type: application/json' -d "
            f'\'{{"inputs":[{{"name":"{spec.name}","shape":{shape},"datatype":"{_oip(spec.dtype)}",'
            f'"data":{[0] * _count(shape)}}}]}}\''
        )
        log.warning("try:  %s", example if _count(shape) <= 64 else f"curl -s {base}/v2/models/{m.name}")


def _oip(dtype: str) -> str:
    from ferry.protocol.datatypes import from_ferry

    return from_ferry(dtype)


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
