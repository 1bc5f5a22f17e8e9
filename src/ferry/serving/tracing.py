"""OpenTelemetry traces of requests: one span per request, with child spans for decode, queue wait, batch
compute and encode, joined to an incoming W3C `traceparent` (HTTP header or gRPC metadata).

Off by default, and then free: `Tracing.off()` holds no tracer, `request()` returns a shared no-op
context, and the batcher only reads a context variable that stays None. On (`--trace-otlp-endpoint URL`,
`--trace-sample-rate R`), spans go to an OTLP/HTTP collector; tests pass their own tracer provider with
the SDK's in-memory exporter. The queue and compute spans are made after the batch has run, with the
times the batcher recorded, since they happen on a worker thread shared by many requests.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.errors import BackendUnavailableError

# The span of the request being handled, for the batcher and the model to hang their child spans on.
current: contextvars.ContextVar[Any] = contextvars.ContextVar("ferry_trace", default=None)


@dataclass
class BatchTimes:
    """What the batcher saw of one request, in time.time_ns(): filled on the worker thread."""

    enqueued: int = 0
    started: int = 0
    finished: int = 0
    rows: int = 0


class Tracing:
    def __init__(self, tracer: Any = None):
        self.tracer = tracer

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def otlp(cls, endpoint: str, sample_rate: float = 1.0, service: str = "ferry") -> Tracing:
        """Spans to an OTLP/HTTP collector at `endpoint` (e.g. http://127.0.0.1:4318/v1/traces)."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise BackendUnavailableError("tracing needs OpenTelemetry: pip install 'ferry[tracing]'") from None
        provider = cls.provider(sample_rate, service)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider.get_tracer("ferry.serve"))

    @staticmethod
    def provider(sample_rate: float = 1.0, service: str = "ferry") -> Any:
        """A tracer provider that follows the caller's sampling decision and samples new traces at `rate`."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        return TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_rate)), resource=Resource.create({"service.name": service})
        )

    @contextlib.contextmanager
    def request(self, name: str, protocol: str, headers: Mapping[str, str]) -> Iterator[Any]:
        """The request's span (joined to `traceparent` when one came), current for its task; None when off."""
        if self.tracer is None:
            yield None
            return
        from opentelemetry import propagate, trace

        parent = propagate.extract(dict(headers))
        with self.tracer.start_as_current_span(
            f"infer {name}", context=parent, kind=trace.SpanKind.SERVER,
            attributes={"ferry.model": name, "ferry.protocol": protocol},
        ) as span:  # fmt: skip
            token = current.set(span)
            try:
                yield span
            finally:
                current.reset(token)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A child span of the current request (decode, encode); nothing when off or not sampled."""
        if self.tracer is None or current.get() is None:
            yield
            return
        with self.tracer.start_as_current_span(name):
            yield


def record_batch(tracer: Any, times: BatchTimes) -> None:
    """The queue-wait and compute spans of one request, from the times the batcher recorded."""
    span = current.get()
    if tracer is None or span is None or not times.finished:
        return
    from opentelemetry import trace

    context = trace.set_span_in_context(span)
    queue = tracer.start_span("queue", context=context, start_time=times.enqueued)
    queue.end(end_time=times.started)
    compute = tracer.start_span("compute", context=context, start_time=times.started,
                                attributes={"ferry.batch_rows": times.rows})  # fmt: skip
    compute.end(end_time=times.finished)


def now_ns() -> int:
    return time.time_ns()
