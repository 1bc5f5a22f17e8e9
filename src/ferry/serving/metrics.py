"""Prometheus metrics, one registry per server so that tests can run several servers in one process.

`Metrics` is the one place the server reports events to (a request's outcome, a batch, a cache lookup);
it feeds both the Prometheus series and the Triton-shaped statistics (`stats.py`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ferry.serving.stats import Statistics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ferry_requests", "Inference requests by outcome", ["model", "version", "protocol", "outcome"], registry=r
        )
        self.latency = Histogram(
            "ferry_request_seconds",
            "Time per request, by phase: queue (waiting to run), compute (the batch's run), total",
            ["model", "version", "phase"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "ferry_batch_rows",
            "Rows per engine run after dynamic batching",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.queue_depth = Gauge("ferry_queue_depth", "Requests waiting", ["model", "version"], registry=r)
        self.in_flight = Gauge("ferry_in_flight_requests", "Requests being handled", registry=r)
        self.variants = Counter(
            "ferry_variant_requests", "Requests answered per traffic-split variant", ["model", "variant"], registry=r
        )
        self.shadow = Counter(
            "ferry_shadow_comparisons",
            "Shadow runs by whether they matched the answer given",
            ["model", "variant", "outcome"],
            registry=r,
        )
        self.models_loaded = Gauge("ferry_models_loaded", "Model versions loaded and serving", registry=r)
        self.cache = Counter(
            "ferry_response_cache", "Response cache lookups by result", ["model", "version", "result"], registry=r
        )
        self.steps = Histogram(
            "ferry_pipeline_step_seconds",
            "Time per pipeline step and request (a fan-out step's items together)",
            ["pipeline", "step"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.statistics = Statistics()
        self._children: dict[tuple[str, ...], tuple] = {}

    def on_request(self, model: str, version: str, protocol: str, outcome: str, seconds: float | None) -> None:
        """One request's outcome; `seconds` is None when no model answered (unknown or not ready)."""
        key = (model, version, protocol, outcome)
        child = self._children.get(key)
        if child is None:
            # prometheus_client's labels() builds and locks per call (about 1.5 us); a request reuses its child.
            child = self._children[key] = (self.requests.labels(*key), self.latency.labels(model, version, "total"))
        child[0].inc()
        if seconds is not None:
            child[1].observe(seconds)
            self.statistics.on_request(model, version, outcome == "success", seconds)

    def on_step(self, pipeline: str, step: str, seconds: float) -> None:
        self.steps.labels(pipeline, step).observe(seconds)

    def on_cache(self, model: str, version: str, hit: bool, seconds: float) -> None:
        self.cache.labels(model, version, "hit" if hit else "miss").inc()
        self.statistics.on_cache(model, version, hit, seconds)

    def on_batch(self, model: str, version: str, rows: int, seconds: float, waits: list[float]) -> None:
        self.batch_size.labels(model, version).observe(rows)
        self.latency.labels(model, version, "compute").observe(seconds)
        for wait in waits:
            self.latency.labels(model, version, "queue").observe(wait)
        self.statistics.on_batch(model, version, rows, seconds, waits)

    def render(self) -> bytes:
        return generate_latest(self.registry)
