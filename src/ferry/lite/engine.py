"""Runs a lite `Graph` with numpy kernels.

`Program` compiles a graph once: it finds every node's kernel (failing at load time, listing every
unsupported node), splits static attributes from subgraph attributes, and works out after which step
each intermediate tensor is dead so that it can be dropped (or its arena slot reused). `Engine` is the
public face: inputs checked by name, dtype and rank; outputs by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from . import ops  # noqa: F401  (registers the kernels)
from .errors import LiteError, LiteInputError, UnsupportedOpError
from .graph import Graph, Node
from .registry import lookup


class Subgraph:
    """A graph attribute (If branches, Loop and Scan bodies), called with its inputs by position."""

    def __init__(self, program: Program, outer: dict[str, Any]):
        self.program, self.outer = program, outer

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.program.graph.inputs]

    def __call__(self, *args: Any) -> list[Any]:
        env = dict(self.outer)
        env.update(self.program.graph.weights)
        env.update(zip(self.input_names, args))
        self.program.execute(env)
        return [env[v.name] for v in self.program.graph.outputs]


class Step:
    __slots__ = ("node", "fn", "inputs", "outputs", "attrs", "graphs", "frees")

    def __init__(self, node: Node, fn, graphs: dict[str, Any]):
        self.node, self.fn = node, fn
        self.inputs, self.outputs = list(node.inputs), list(node.outputs)
        self.attrs = {k: v for k, v in node.attrs.items() if k not in graphs}
        if fn is not None and "_num_outputs" in fn.__code__.co_varnames:
            self.attrs["_num_outputs"] = len(node.outputs)  # ops whose arity decides the result (Split)
        self.graphs = graphs  # attribute name -> Program or list of Programs
        self.frees: list[str] = []

    def __call__(self, env: dict[str, Any]) -> None:
        args = [env[name] if name else None for name in self.inputs]
        while args and args[-1] is None and not self.inputs[len(args) - 1]:
            args.pop()  # trailing optional inputs left out: let the kernel's defaults apply
        attrs = self.attrs
        if self.graphs:
            attrs = dict(attrs)
            for key, program in self.graphs.items():
                attrs[key] = (
                    [Subgraph(p, env) for p in program] if isinstance(program, list) else Subgraph(program, env)
                )
        try:
            result = self.fn(*args, **attrs)
        except LiteError:
            raise
        except Exception as exc:
            node = self.node
            raise LiteError(f"node {node.name or node.outputs[0]!r} ({node.op}) failed: {exc}") from exc
        if not isinstance(result, tuple):
            result = (result,)
        for name, value in zip(self.outputs, result):
            if name:
                env[name] = value


class Program:
    def __init__(self, graph: Graph, opsets: dict[str, int] | None = None, keep: Iterable[str] = ()):
        self.graph = graph
        self.opsets = {**(opsets or {}), **graph.opsets}
        missing: list[str] = []
        self.steps = self._compile(missing)
        if missing:
            raise UnsupportedOpError(
                f"{len(missing)} node(s) have no lite kernel: " + "; ".join(missing)
                + ". Run `python -m ferry.lite --ops` for the supported list."
            )  # fmt: skip
        self._plan_frees(set(keep) | {v.name for v in graph.outputs})

    def _compile(self, missing: list[str]) -> list[Step]:
        steps = []
        for node in self.graph.nodes:
            domain = "" if node.domain == "ai.onnx" else node.domain
            opset = self.opsets.get(domain, 1)
            fn = lookup(domain, node.op, opset)
            if fn is None:
                where = f"{domain + '.' if domain else ''}{node.op} (opset {opset})"
                missing.append(f"{where} at node {node.name or node.outputs[0]!r}")
            graphs: dict[str, Any] = {}
            for key, value in node.attrs.items():
                if isinstance(value, Graph):
                    graphs[key] = self._child(value, missing)
                elif isinstance(value, list) and value and isinstance(value[0], Graph):
                    graphs[key] = [self._child(g, missing) for g in value]
            steps.append(Step(node, fn, graphs))
        return steps

    def _child(self, graph: Graph, missing: list[str]) -> Program:
        try:
            return Program(graph, self.opsets)
        except UnsupportedOpError as exc:
            missing.append(str(exc))
            return None  # type: ignore[return-value]

    def _plan_frees(self, keep: set[str]) -> None:
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            reads = [n for n in step.inputs if n]
            for program in step.graphs.values():
                for p in program if isinstance(program, list) else [program]:
                    if p is not None:
                        reads += p.graph.captured()
            for name in reads:
                last[name] = i
        for name, i in last.items():
            if name not in keep and name not in self.graph.weights:
                self.steps[i].frees.append(name)

    def execute(self, env: dict[str, Any]) -> None:
        for step in self.steps:
            step(env)
            for name in step.frees:
                env.pop(name, None)


class Engine:
    """A loaded lite model. `run(feeds)` returns a dict of output name -> array."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.program = Program(graph)
        self.input_names = [v.name for v in graph.inputs if v.name not in graph.weights]
        self.output_names = [v.name for v in graph.outputs]

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        self._check(feeds)
        env: dict[str, Any] = dict(self.graph.weights)
        env.update(feeds)
        self.program.execute(env)
        wanted = outputs or self.output_names
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise LiteInputError(f"model {self.graph.name!r} has no output(s) {unknown}; outputs: {self.output_names}")
        return {name: env[name] for name in wanted}

    def _check(self, feeds: dict[str, Any]) -> None:
        name = self.graph.name
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise LiteInputError(
                f"model {name!r}: expected inputs {self.input_names}, got {sorted(feeds)}"
                + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else "")
            )  # fmt: skip
        for value in self.graph.inputs:
            got = feeds.get(value.name)
            if not isinstance(got, np.ndarray) or value.dtype in (None, "sequence", "optional"):
                continue
            if got.dtype.name != value.dtype:
                raise LiteInputError(
                    f"model {name!r}, input {value.name!r}: expected dtype {value.dtype}, got {got.dtype.name}"
                )
            if value.shape is not None and got.ndim != len(value.shape):
                raise LiteInputError(
                    f"model {name!r}, input {value.name!r}: expected rank {len(value.shape)} "
                    f"(shape {value.shape}), got shape {list(got.shape)}"
                )
            for axis, (want, have) in enumerate(zip(value.shape or [], got.shape)):
                if isinstance(want, int) and want >= 0 and want != have:
                    raise LiteInputError(
                        f"model {name!r}, input {value.name!r}: dimension {axis} must be {want}, got {have} "
                        f"(shape {list(got.shape)})"
                    )
