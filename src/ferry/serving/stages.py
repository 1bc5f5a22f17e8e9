"""Multi-stage pipelines: models and processing steps wired by named tensors, where one request may fan out
into many items (text boxes in an image) that later steps handle one by one and a gather step collects
back. Paddle Serving's pipeline (a DAG of ops, each with pre- and postprocessing) in ferry's terms.

A repository folder with no version folders and a config.json like

    {"pipeline": {
        "inputs": {"image": "BYTES"},
        "outputs": ["text", "scores"],
        "steps": [
          {"name": "split", "function": "mypkg.ocr:find_boxes", "inputs": ["image"], "outputs": ["crop"],
           "fan_out": true},
          {"name": "read", "model": "recognizer", "inputs": {"x": "crop"}, "outputs": {"y": "logits"},
           "pad": {"axis": 3, "multiple": 32}},
          {"name": "join", "function": "mypkg.ocr:decode_all", "inputs": ["logits"], "outputs": ["text", "scores"],
           "gather": true}]}}

serves `<folder>` as one model. The rules:
- A **function** step names a registered function (`functions.py`: ferry's built-in ones) or an importable
  `module:function` (code: it runs with the server's rights). It takes numpy arrays by its input names as
  keyword arguments and returns a dict of its outputs (or a tuple in the order of `outputs`).
- A **model** step names a served model (`version` optional) and maps its inputs and outputs to pipeline
  tensors, as ensemble steps do. Its requests go through the model's own queue, so items of one request
  and of concurrent requests are batched together there.
- A **fan-out** step returns, for each of its outputs, a list: one entry per item. Steps after it that read
  an item tensor run once per item, all at once; a model step can `pad` its input on an axis up to a
  multiple, so that items of different sizes (crops of different widths) share shapes and batch together.
- A **gather** step gets each item tensor as a list (one entry per item, in order) and returns request
  tensors. One level of fan-out; a request with no items gives the gather step empty lists.
- Each step's time is in `ferry_pipeline_step_seconds{pipeline,step}`; an error names the step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import BackendError, ConfigError, FerryError, InputError
from ferry.package.manifest import Signature, TensorSpec
from ferry.protocol import datatypes
from ferry.serving.codec import InferRequest

log = logging.getLogger("ferry.serve")


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: dict[str, str]  # the step's own name -> pipeline tensor
    outputs: dict[str, str]  # the step's own name -> pipeline tensor
    model: str | None = None
    version: str | None = None
    function: str | None = None
    fan_out: bool = False
    gather: bool = False
    pad: dict[str, int] = field(default_factory=dict)  # {"axis": A, "multiple": M, "value": V}


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    inputs: dict[str, str]  # tensor -> OIP datatype
    outputs: tuple[str, ...]
    stages: tuple[Stage, ...]


def parse(name: str, doc: Any, source: Path) -> PipelineSpec:
    """Check the whole pipeline at load: every tensor read is made earlier, fan-out and gather pair up."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: pipeline {msg}")

    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise fail("needs 'inputs', 'outputs' and a non-empty list of 'steps'")
    inputs, outputs = doc.get("inputs"), doc.get("outputs")
    if not isinstance(inputs, dict) or not inputs or not all(d in datatypes.TO_NUMPY for d in inputs.values()):
        raise fail(f"'inputs' must map tensor names to OIP datatypes ({', '.join(datatypes.TO_NUMPY)})")
    if not isinstance(outputs, list) or not outputs:
        raise fail("'outputs' must be a non-empty list of tensor names")
    request_level, item_level = set(inputs), set()
    fanned = gathered = False
    stages = []
    for i, raw in enumerate(doc["steps"]):
        where = f"step {i}" + (f" ({raw.get('name')})" if isinstance(raw, dict) and raw.get("name") else "")
        if not isinstance(raw, dict) or (("model" in raw) == ("function" in raw)):
            raise fail(f"{where} needs either a 'model' or a 'function'")
        stage = _stage(raw, i, lambda m, w=where: fail(f"{w}: {m}"))
        missing = [t for t in stage.inputs.values() if t not in request_level | item_level]
        if missing:
            raise fail(f"{where} reads {missing}, which no earlier step or input provides")
        reads_items = any(t in item_level for t in stage.inputs.values())
        if stage.fan_out:
            if fanned or stage.model:
                raise fail(f"{where}: only one function step may fan out")
            fanned = True
            item_level |= set(stage.outputs.values())
        elif stage.gather:
            if not fanned or gathered or stage.model:
                raise fail(f"{where}: a gather is a function step after the fan-out (one of each)")
            gathered = True
            request_level |= set(stage.outputs.values())
        elif reads_items:
            if gathered:
                raise fail(f"{where} reads item tensors after they were gathered")
            item_level |= set(stage.outputs.values())
        else:
            request_level |= set(stage.outputs.values())
        stages.append(stage)
    if fanned and not gathered:
        raise fail('fans out but never gathers: add a step with "gather": true')
    unmade = [t for t in outputs if t not in request_level]
    if unmade:
        raise fail(f"outputs {unmade} are no request tensor that a step makes")
    return PipelineSpec(name, dict(inputs), tuple(outputs), tuple(stages))


def _stage(raw: dict, index: int, fail: Callable[[str], ConfigError]) -> Stage:
    name = raw.get("name", f"step{index}")
    if "model" in raw:
        ins, outs = raw.get("inputs", {}), raw.get("outputs", {})
        if not isinstance(ins, dict) or not isinstance(outs, dict) or not outs:
            raise fail("a model step maps its inputs and outputs to pipeline tensors ({member: tensor})")
        pad = raw.get("pad", {})
        if not isinstance(pad, dict) or not _valid_pad(pad):
            raise fail('\'pad\' is {"axis": A, "multiple": M (> 0), "value": V}')
        version = raw.get("version")
        return Stage(str(name), dict(ins), dict(outs), model=str(raw["model"]),
                     version=None if version is None else str(version), pad=dict(pad))  # fmt: skip
    ins, outs = raw.get("inputs", []), raw.get("outputs", [])
    if not isinstance(ins, list) or not isinstance(outs, list) or not outs:
        raise fail("a function step lists the tensors it reads ('inputs') and makes ('outputs')")
    if raw.get("fan_out") and raw.get("gather"):
        raise fail("a step either fans out or gathers")
    return Stage(str(name), {t: t for t in ins}, {t: t for t in outs}, function=str(raw["function"]),
                 fan_out=bool(raw.get("fan_out")), gather=bool(raw.get("gather")))  # fmt: skip


class PipelineModel:
    """Looks like a ServedModel to the protocols: name, version, signature, infer."""

    version = "1"

    def __init__(self, spec: PipelineSpec, registry: Any, events: Any = None):
        from ferry.serving.functions import resolve

        self.spec = spec
        self.name = spec.name
        self._registry = registry
        self._events = events
        self._functions = {s.name: resolve(s.function) for s in spec.stages if s.function}

    def members(self) -> list[tuple[str, str | None]]:
        return [(s.model, s.version) for s in self.spec.stages if s.model]

    @property
    def signature(self) -> Signature:
        """Inputs as declared; outputs of unknown shape (their rank and sizes depend on the data)."""
        inputs = tuple(TensorSpec(n, _ferry_dtype(d), ("batch",)) for n, d in self.spec.inputs.items())
        outputs = tuple(TensorSpec(n, "float32", ("batch",)) for n in self.spec.outputs)
        return Signature(inputs, outputs)

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        unknown = sorted(set(request.inputs) - set(self.spec.inputs))
        missing = sorted(set(self.spec.inputs) - set(request.inputs))
        if unknown or missing:
            raise InputError(
                f"pipeline {self.name!r} takes {list(self.spec.inputs)}; unknown {unknown}, missing {missing}"
            )
        tensors: dict[str, Any] = dict(request.inputs)
        items: list[dict[str, Any]] | None = None
        for stage in self.spec.stages:
            started = time.monotonic()
            try:
                items = await self._run(stage, tensors, items)
            except FerryError as exc:
                raise type(exc)(f"pipeline {self.name!r}, step {stage.name!r}: {exc}") from exc
            except Exception as exc:  # a processing function's fault: a 500 that names the step
                log.exception("pipeline %s, step %s failed", self.name, stage.name)
                raise BackendError(
                    f"pipeline {self.name!r}, step {stage.name!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if self._events is not None:
                self._events.on_step(self.name, stage.name, time.monotonic() - started)
        wanted = request.outputs or list(self.spec.outputs)
        bad = [o for o in wanted if o not in self.spec.outputs]
        if bad:
            raise InputError(f"pipeline {self.name!r} has no output(s) {bad}; outputs: {list(self.spec.outputs)}")
        return {o: np.asarray(tensors[o]) for o in wanted}

    async def _run(self, stage: Stage, tensors: dict[str, Any], items: list[dict[str, Any]] | None):
        """Run one stage; returns the items (None before the fan-out and after the gather). A tensor that is
        not a request tensor is an item tensor: `parse` checked that every name read is one or the other."""
        if stage.fan_out:
            made = await self._call(stage, tensors)
            counts = {len(v) for v in made.values()}
            if len(counts) > 1:
                raise InputError(f"fan-out outputs hold different numbers of items: {sorted(counts)}")
            return [{t: made[t][i] for t in made} for i in range(counts.pop() if counts else 0)]
        item_inputs = [t for t in stage.inputs.values() if t not in tensors]
        if stage.gather:
            lists = {t: [item[t] for item in items or []] for t in item_inputs}
            tensors.update(await self._call(stage, {**tensors, **lists}))
            return None
        if item_inputs:
            results = await asyncio.gather(*(self._one(stage, {**tensors, **item}) for item in items or []))
            for item, made in zip(items or [], results):
                item.update(made)
            return items
        tensors.update(await self._one(stage, tensors))
        return items

    async def _one(self, stage: Stage, tensors: dict[str, Any]) -> dict[str, Any]:
        if stage.function:
            return await self._call(stage, tensors)
        member = self._registry.get(stage.model, stage.version)
        feeds = {m: _pad(np.asarray(tensors[t]), stage.pad) for m, t in stage.inputs.items()}
        results = await member.infer(InferRequest(inputs=feeds, outputs=list(stage.outputs)))
        return {t: results[m] for m, t in stage.outputs.items()}

    async def _call(self, stage: Stage, tensors: dict[str, Any]) -> dict[str, Any]:
        fn = self._functions[stage.name]
        args = {name: tensors[t] for name, t in stage.inputs.items()}
        made = await asyncio.to_thread(fn, **args)
        names = list(stage.outputs)
        if isinstance(made, tuple):
            made = dict(zip(names, made))
        elif not isinstance(made, dict) and len(names) == 1:
            made = {names[0]: made}  # one output: the value alone will do
        if not isinstance(made, dict) or set(made) != set(names):
            got = sorted(made) if isinstance(made, dict) else type(made).__name__
            raise RuntimeError(f"function {stage.function!r} returned {got}, expected {names}")
        return {stage.outputs[k]: v for k, v in made.items()}


def _valid_pad(pad: dict[str, Any]) -> bool:
    if not pad:
        return True
    axis, multiple = pad.get("axis"), pad.get("multiple")
    return (
        set(pad) <= {"axis", "multiple", "value"}
        and isinstance(axis, int)
        and isinstance(multiple, int)
        and multiple > 0
    )


def _pad(array: np.ndarray, pad: dict[str, int]) -> np.ndarray:
    if not pad:
        return array
    axis, multiple = pad["axis"], pad["multiple"]
    size = array.shape[axis]
    target = -(-size // multiple) * multiple
    if target == size:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, target - size)
    return np.pad(array, widths, constant_values=pad.get("value", 0))


def _ferry_dtype(oip: str) -> str:
    return "string" if oip == "BYTES" else datatypes.TO_NUMPY[oip].name
