"""OpenTelemetry traces: a span per request joined to the caller's W3C traceparent, with decode, queue,
compute and encode children, over HTTP and gRPC. The server runs in this process with the SDK's
in-memory exporter; off, the same server records nothing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import ferry
from ferry.serving.server import ServeOptions, serve
from serving_helpers import W, free_port, infer_body, linear_model, post

sdk = pytest.importorskip("opentelemetry.sdk.trace")
tritongrpc = pytest.importorskip("tritonclient.grpc")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class InProcessServer:
    def __init__(self, root, tracer=None):
        self.options = ServeOptions(path=root, http_port=free_port(), grpc_port=free_port(), tracer=tracer)
        self.http = f"127.0.0.1:{self.options.http_port}"
        self.grpc = f"127.0.0.1:{self.options.grpc_port}"
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            started = asyncio.Event()
            task = asyncio.create_task(serve(self.options, ready=started, announce=False, stop=self._stop))
            await started.wait()
            ready.set()
            await task

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(60), "the server did not start"

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)  # the graceful stop SIGTERM would start
        self._thread.join(60)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ferry.serving.tracing import Tracing

    root = tmp_path_factory.mktemp("traced")
    ferry.save(linear_model(), root / "linear" / "1", name="linear", version="1")
    exporter = InMemorySpanExporter()
    provider = Tracing.provider(sample_rate=1.0)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = InProcessServer(root, tracer=provider.get_tracer("test"))
    yield server, exporter
    server.stop()


def spans_of(exporter, trace_id: str) -> dict[str, object]:
    return {s.name: s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_span_joins_the_callers_trace_with_its_phases(traced, protocol):
    server, exporter = traced
    exporter.clear()
    x = np.ones((2, 4), np.float32)
    if protocol == "http":
        status, _, _ = post(server.http, "/v2/models/linear/infer", infer_body(x), {"traceparent": TRACEPARENT})
        assert status == 200
    else:
        client = tritongrpc.InferenceServerClient(server.grpc)
        inp = tritongrpc.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("linear", [inp], headers={"traceparent": TRACEPARENT}).as_numpy("y")
        np.testing.assert_allclose(out, x @ W, rtol=1e-5)
    spans = spans_of(exporter, TRACE_ID)
    assert {"infer linear", "decode", "queue", "compute", "encode"} <= set(spans)
    request = spans["infer linear"]
    assert format(request.parent.span_id, "016x") == PARENT_ID  # joined to the caller's span
    assert request.attributes["ferry.protocol"] == protocol
    for phase in ("decode", "queue", "compute", "encode"):
        assert spans[phase].parent.span_id == request.context.span_id
    assert spans["queue"].end_time <= spans["compute"].start_time + 1
    assert spans["compute"].attributes["ferry.batch_rows"] >= 2
    assert request.start_time <= spans["decode"].start_time and spans["encode"].end_time <= request.end_time


def test_a_request_without_traceparent_starts_its_own_trace(traced):
    server, exporter = traced
    exporter.clear()
    assert post(server.http, "/v2/models/linear/infer", infer_body(np.ones((1, 4), np.float32)))[0] == 200
    roots = [s for s in exporter.get_finished_spans() if s.name == "infer linear"]
    assert len(roots) == 1 and roots[0].parent is None


def test_tracing_off_records_nothing_and_the_batcher_sees_no_trace(tmp_path):
    from ferry.serving import tracing

    ferry.save(linear_model(), tmp_path / "linear" / "1", name="linear", version="1")
    server = InProcessServer(tmp_path)
    try:
        status, _, _ = post(server.http, "/v2/models/linear/infer", infer_body(np.ones((1, 4), np.float32)),
                            {"traceparent": TRACEPARENT})  # fmt: skip
        assert status == 200
    finally:
        server.stop()
    assert tracing.current.get() is None
