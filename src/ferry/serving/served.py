"""One loaded model version and the path of a request through it: cache, hook, image decoding, input
checks, the queue; and what a version needs before it serves (warm-up, its response cache)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import ferry
from ferry.errors import BackendError, ConfigError, FerryError, InputError, UnavailableError
from ferry.protocol import datatypes
from ferry.serving import pipeline, tracing
from ferry.serving.batching import Batcher
from ferry.serving.cache import ResponseCache, request_key
from ferry.serving.codec import InferRequest
from ferry.serving.repository import ModelSpec

log = logging.getLogger("ferry.serve")


@dataclass
class ServedModel:
    name: str
    version: str
    package: ferry.ModelPackage
    predictor: ferry.Predictor
    batcher: Batcher
    outputs: list[str]
    hook: Any = None
    max_image_pixels: int | None = pipeline.MAX_PIXELS
    decoding: int = 0  # requests whose images are being decoded: admitted, not yet queued
    spec: ModelSpec | None = None
    cache: ResponseCache | None = None
    events: Any = None  # where cache lookups are reported (the server's Metrics)
    tracer: Any = None  # an OpenTelemetry tracer when tracing is on

    @property
    def signature(self):
        return self.package.signature

    @property
    def batchable(self) -> bool:
        return batchable(self.package)

    def check(
        self, inputs: dict[str, np.ndarray], requested: list[str] | None, extra: tuple[str, ...] = ()
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Validate before queueing: inputs against the signature (returned as the engine takes them, so that
        the batch runs with `validate=False`), requested outputs against the model."""
        inputs = self.predictor.check_inputs(inputs)
        if requested is None:
            return inputs, self.outputs
        unknown = [o for o in requested if o not in self.outputs and o not in extra]
        if unknown:
            raise InputError(f"model {self.name!r} has no output(s) {unknown}; outputs: {self.outputs}")
        return inputs, [o for o in requested if o in self.outputs] or self.outputs

    async def _decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decode images inside admission control: requests being decoded count against the queue limit,
        so a burst of images is refused with 503 instead of decoded outside every bound."""
        limit = self.batcher.policy.max_queue
        if self.decoding + self.batcher.depth >= limit:
            raise UnavailableError(f"queue is full ({limit} requests decoding or waiting); retry later")
        self.decoding += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                pipeline.decode_pool(), pipeline.decode_images, self.package, inputs, self.max_image_pixels
            )
        finally:
            self.decoding -= 1

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        key = None
        if self.cache is not None:
            started = time.monotonic()
            key = request_key(request.inputs, request.outputs)
            found = self.cache.get(key)
            if self.events is not None:
                self.events.on_cache(self.name, self.version, found is not None, time.monotonic() - started)
            if found is not None:
                return dict(found)
        inputs = request.inputs
        if self.hook is not None and hasattr(self.hook, "preprocess"):
            inputs = await asyncio.to_thread(self.hook.preprocess, inputs)
        images = pipeline.wants_decoding(self.package, inputs)
        if images:
            inputs = await self._decode(inputs)
        extra = pipeline.EXTRA_OUTPUTS if images and pipeline.has_topk(self.package) else ()
        times = tracing.BatchTimes() if tracing.current.get() is not None else None
        feeds, wanted = self.check(inputs, request.outputs, extra)
        outputs = await self.batcher.submit(feeds, wanted, times)
        if times is not None:
            tracing.record_batch(self.tracer, times)
        if extra:
            outputs = pipeline.label_outputs(self.package, outputs)
        if self.hook is not None and hasattr(self.hook, "postprocess"):
            outputs = await asyncio.to_thread(self.hook.postprocess, inputs, outputs)
        if request.outputs is not None:
            outputs = {k: outputs[k] for k in request.outputs if k in outputs}
        if key is not None:
            self.cache.put(key, outputs)
        return outputs

    def triton_config(self) -> dict[str, Any]:
        """How this version is served, in Triton's model configuration (its JSON form)."""
        policy = self.batcher.policy
        batch = policy.max_batch_size if self.batchable else 0

        def tensors(specs) -> list[dict[str, Any]]:
            return [
                {
                    "name": t.name,
                    "data_type": "TYPE_" + ("STRING" if t.dtype == "string" else datatypes.from_ferry(t.dtype)),
                    "dims": [d if isinstance(d, int) else -1 for d in (t.shape[1:] if batch else t.shape)],
                }
                for t in specs
            ]

        spec = self.spec
        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": self.predictor.backend.split(" ")[0],
            "max_batch_size": batch,
            "input": tensors(self.signature.inputs),
            "output": tensors(self.signature.outputs),
            "dynamic_batching": {
                "preferred_batch_size": list(policy.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(policy.max_delay_ms * 1000),
            },
            "instance_group": [{"name": self.name, "count": policy.instances, "kind": "KIND_CPU"}],
            "response_cache": {"enable": self.cache is not None},
            "parameters": {"threads": spec.threads if spec else None},
        }


def warm_up(predictor: ferry.Predictor, spec: ModelSpec, version: str) -> None:
    """Run the model on made-up inputs before it takes traffic, so that the first request does not pay for
    session creation, arena growth or OpenVINO's first compile. A model's config.json sets it:
    `"warmup": {"batch_sizes": [1, 8], "runs": 1, "dims": {"height": 640}}`, or `"warmup": false`; the
    default is one run at batch 1, other dynamic dimensions 8 unless `dims` names them.
    A failure here fails the load, with the reason, and the version never serves."""
    from ferry.converters.parity import random_feeds

    setting = spec.config.get("warmup", {})
    if setting is False:
        return
    if not isinstance(setting, dict):
        raise ConfigError(f"model {spec.name!r}: 'warmup' must be an object or false, got {setting!r}")
    sizes = setting.get("batch_sizes", [1])
    runs = setting.get("runs", 1)
    dims = setting.get("dims", {})
    if not isinstance(dims, dict) or not all(isinstance(v, int) and v >= 1 for v in dims.values()):
        raise ConfigError(f"model {spec.name!r}: warmup.dims maps dimension names to sizes (positive ints)")
    if not (isinstance(sizes, list) and all(isinstance(b, int) and b >= 1 for b in sizes)) or not (
        isinstance(runs, int) and runs >= 1
    ):
        raise ConfigError(f"model {spec.name!r}: warmup needs batch_sizes (positive ints) and runs (>= 1)")
    started = time.monotonic()
    try:
        for batch in sizes:
            feeds = random_feeds(predictor.config.package.signature, batch=batch, dims=dims)
            for _ in range(runs):
                predictor.predict(feeds)
    except FerryError as exc:
        raise BackendError(f"model {spec.name!r} version {version}: warm-up failed: {exc}") from exc
    log.warning(  # at the level of the startup lines, so that it shows without -v
        "warmed up %s version %s in %.0f ms (batch sizes %s, %d run(s) each)",
        spec.name, version, (time.monotonic() - started) * 1000, sizes, runs,
    )  # fmt: skip


def response_cache(spec: ModelSpec, hook: Any) -> ResponseCache | None:
    """The model's response cache, when its config turns one on and its answers can be cached exactly."""
    setting = spec.config.get("response_cache")
    if not setting:
        return None
    if not isinstance(setting, dict) or not isinstance(setting.get("enable", False), bool):
        raise ConfigError(f'model {spec.name!r}: \'response_cache\' must be {{"enable": true, "max_bytes": N}}')
    if not setting.get("enable", False):
        return None
    if spec.config.get("deterministic", True) is False or hook is not None:
        log.warning("not caching %s: its answers may differ for the same inputs (a hook, or deterministic: false)",
                    spec.name)  # fmt: skip
        return None
    max_bytes = setting.get("max_bytes", 64 << 20)
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigError(f"model {spec.name!r}: response_cache.max_bytes must be a positive integer")
    return ResponseCache(max_bytes)


def batchable(package: ferry.ModelPackage) -> bool:
    """Merging requests needs a dynamic axis 0 shared by every input and output."""
    sig = package.signature
    firsts = {spec.shape[0] if spec.shape else None for spec in [*sig.inputs, *sig.outputs]}
    return len(firsts) == 1 and isinstance(next(iter(firsts)), str)
