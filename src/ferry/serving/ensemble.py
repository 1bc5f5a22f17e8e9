"""Ensembles: a served name that chains models, one's outputs feeding the next's inputs.

A repository folder with no version folders and a config.json like

    {"ensemble": {"inputs": ["x"], "outputs": ["z"],
                  "steps": [{"model": "first", "inputs": {"x": "x"}, "outputs": {"y": "mid"}},
                            {"model": "second", "version": "2", "inputs": {"x": "mid"}, "outputs": {"y": "z"}}]}}

serves `<folder>` as one model. A step's `inputs` map the member's input names to ensemble tensors, and
its `outputs` map the member's outputs to new ensemble tensors. Each member keeps its own queue and
batching; the ensemble is ready when all members are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import ConfigError, InputError
from ferry.package.manifest import Signature, TensorSpec
from ferry.serving.codec import InferRequest


@dataclass(frozen=True)
class Step:
    model: str
    version: str | None
    inputs: dict[str, str]  # member input -> ensemble tensor
    outputs: dict[str, str]  # member output -> ensemble tensor


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]


def parse(name: str, doc: Any, source: Path) -> EnsembleSpec:
    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: ensemble {msg}")

    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise fail("needs 'inputs', 'outputs' and a non-empty list of 'steps'")
    inputs, outputs = doc.get("inputs"), doc.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or not outputs:
        raise fail("'inputs' and 'outputs' must be non-empty lists of tensor names")
    known = set(inputs)
    steps = []
    for i, raw in enumerate(doc["steps"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
            raise fail(f"step {i} needs a 'model'")
        step_in, step_out = raw.get("inputs", {}), raw.get("outputs", {})
        if not isinstance(step_in, dict) or not isinstance(step_out, dict) or not step_out:
            raise fail(f"step {i}: 'inputs' and 'outputs' must map member tensors to ensemble tensors")
        missing = [t for t in step_in.values() if t not in known]
        if missing:
            raise fail(f"step {i} ({raw['model']}) reads {missing}, which no earlier step or input provides")
        known |= set(step_out.values())
        version = raw.get("version")
        steps.append(Step(raw["model"], str(version) if version is not None else None, dict(step_in), dict(step_out)))
    unmade = [t for t in outputs if t not in known]
    if unmade:
        raise fail(f"outputs {unmade} are produced by no step")
    return EnsembleSpec(name, tuple(inputs), tuple(outputs), tuple(steps))


class EnsembleModel:
    """Looks like a ServedModel to the protocols: name, version, signature, infer."""

    version = "1"

    def __init__(self, spec: EnsembleSpec, registry: Any):
        self.spec = spec
        self.name = spec.name
        self._registry = registry

    def members(self) -> list[tuple[str, str | None]]:
        return [(s.model, s.version) for s in self.spec.steps]

    @property
    def signature(self) -> Signature:
        """Input specs from the members that read them, output specs from the members that make them."""
        found: dict[str, TensorSpec] = {}
        for step in self.spec.steps:
            sig = self._registry.get(step.model, step.version).signature
            for member, tensor in step.inputs.items():
                if tensor in self.spec.inputs and tensor not in found:
                    s = sig.input(member)
                    found[tensor] = TensorSpec(tensor, s.dtype, s.shape)
            for member, tensor in step.outputs.items():
                if tensor in self.spec.outputs:
                    s = sig.output(member)
                    found[tensor] = TensorSpec(tensor, s.dtype, s.shape)
        return Signature(tuple(found[t] for t in self.spec.inputs), tuple(found[t] for t in self.spec.outputs))

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        unknown = sorted(set(request.inputs) - set(self.spec.inputs))
        missing = sorted(set(self.spec.inputs) - set(request.inputs))
        if unknown or missing:
            raise InputError(
                f"ensemble {self.name!r} takes {list(self.spec.inputs)}; unknown {unknown}, missing {missing}"
            )
        tensors = dict(request.inputs)
        for step in self.spec.steps:
            member = self._registry.get(step.model, step.version)
            feeds = {m: tensors[t] for m, t in step.inputs.items()}
            results = await member.infer(InferRequest(inputs=feeds, outputs=list(step.outputs)))
            for m, t in step.outputs.items():
                tensors[t] = results[m]
        wanted = request.outputs or list(self.spec.outputs)
        bad = [o for o in wanted if o not in self.spec.outputs]
        if bad:
            raise InputError(f"ensemble {self.name!r} has no output(s) {bad}; outputs: {list(self.spec.outputs)}")
        return {o: tensors[o] for o in wanted}
