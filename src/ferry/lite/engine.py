"""Runs a lite `Graph` with numpy kernels.

`Program` compiles a graph once: it finds every node's kernel (failing at load time, listing every
unsupported node), splits static attributes from subgraph attributes, and works out after which step
each intermediate tensor is dead so that it can be dropped (or its arena slot reused). `Engine` is the
public face: inputs checked by name, dtype and rank; outputs by name.

Memory, as `Engine(memory=...)`:
- "arena" (default): the first run at a given set of input shapes records every intermediate's size;
  the planner packs them into one arena by lifetime; later runs write into arena views (kernels that
  can take `out=` write there directly, the others are copied in).
- "free": each intermediate is dropped after its last reader; numpy's allocator reuses what it can.
- "keep": nothing is dropped until the run ends (the baseline the plan is measured against).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import (
    allocator,
    folding,
    ops,  # noqa: F401  (registers the kernels)
    planner,
)
from .errors import LiteError, LiteInputError, UnsupportedOpError
from .graph import Graph, Node
from .registry import lookup

_PLANNABLE = set("biufc")  # dtype kinds that live in the arena (not strings, not objects)
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}  # outputs that may stay views of inputs
SHAPES_KEPT = 16  # sets of input shapes whose plan, folded results and arena an engine keeps


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
    __slots__ = ("node", "fn", "inputs", "outputs", "attrs", "graphs", "frees", "writes_out")

    def __init__(self, node: Node, fn, graphs: dict[str, Any]):
        self.node, self.fn = node, fn
        self.inputs, self.outputs = list(node.inputs), list(node.outputs)
        self.attrs = {k: v for k, v in node.attrs.items() if k not in graphs}
        if fn is not None and "_num_outputs" in fn.__code__.co_varnames:
            self.attrs["_num_outputs"] = len(node.outputs)  # ops whose arity decides the result (Split)
        self.graphs = graphs  # attribute name -> Program or list of Programs
        self.frees: list[str] = []
        self.writes_out = getattr(fn, "writes_out", False) if len(node.outputs) == 1 else False

    def __call__(self, env: dict[str, Any], views: dict[str, np.ndarray] | None = None) -> None:
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
        view = views.get(self.outputs[0]) if views else None
        if view is not None and self.writes_out and (self.writes_out == "checked" or _fits(view, args)):
            attrs = {**attrs, "out": view}
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
            if not name:
                continue
            slot = views.get(name) if views else None
            if slot is not None and value is not slot and _same_layout(slot, value):
                np.copyto(slot, value)  # into its arena slot, so that the kernel's own buffer can go
                value = slot
            env[name] = value


def _fits(view: np.ndarray, args: list[Any]) -> bool:
    try:
        return np.broadcast_shapes(*(a.shape for a in args if isinstance(a, np.ndarray))) == view.shape
    except ValueError:
        return False


def _same_layout(slot: np.ndarray, value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.shape == slot.shape and value.dtype == slot.dtype


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
        self.keep = keep
        self.reads = self._reads()
        last: dict[str, int] = {}
        for i, reads in enumerate(self.reads):
            for name in reads:
                last[name] = i
        for name, i in last.items():
            if name not in keep and name not in self.graph.weights:
                self.steps[i].frees.append(name)

    def _reads(self) -> list[list[str]]:
        """Per step, every name it reads, including what its subgraphs capture."""
        out = []
        for step in self.steps:
            reads = [n for n in step.inputs if n]
            for program in step.graphs.values():
                for p in program if isinstance(program, list) else [program]:
                    reads += sorted(p.graph.captured())
            out.append(reads)
        return out

    def execute(
        self,
        env: dict[str, Any],
        free: bool = True,
        views: dict[str, np.ndarray] | None = None,
        trace: dict[str, tuple] | None = None,
        arena: np.ndarray | None = None,
        static: list[bool] | None = None,
        folded: dict[str, Any] | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        """Run the steps on env, in one of three ways: plain (`free`: drop each tensor after its last reader);
        tracing, for a plan (`trace` collects each intermediate's shape and size, `aliases` the Reshape-like
        outputs that are views of one); or in an arena (`views`: each planned tensor's slot in `arena`).
        `static` marks the steps that shape folding covers (see folding.py): without `folded` they are
        skipped, env already holding their results; with it they run, and their results are stored there."""
        for i, step in enumerate(self.steps):
            fixed = static is not None and static[i]
            if fixed and folded is None:
                if free:
                    for name in step.frees:  # it was their last reader: nothing after it needs them
                        env.pop(name, None)
                continue
            step(env, views)
            if arena is not None:
                _detach(env, step.outputs, views, arena, aliases or {})
            if fixed:
                folded.update((name, folding.freeze(env[name])) for name in step.outputs if name)
            elif trace is not None and (aliases is None or not _view_of(step, env, trace, aliases, self.keep)):
                for name in step.outputs:
                    value = env.get(name)
                    if name not in self.keep and isinstance(value, np.ndarray) and value.dtype.kind in _PLANNABLE:
                        trace[name] = (value.shape, value.dtype.str, value.nbytes)
            if free:
                for name in step.frees:
                    env.pop(name, None)


class Engine:
    """A loaded lite model. `run(feeds)` returns a dict of output name -> array."""

    def __init__(self, graph: Graph, memory: str = "arena", plans: dict[str, planner.Plan] | None = None):
        if memory not in ("arena", "free", "keep"):
            raise ValueError(f"memory must be 'arena', 'free' or 'keep', not {memory!r}")
        self.graph = graph
        self.memory = memory
        self.program = Program(graph)
        allocator.tune()
        self.input_names = [v.name for v in graph.inputs if v.name not in graph.weights]
        self.output_names = [v.name for v in graph.outputs]
        # Per set of input shapes: the memory plan, the folded results and (per thread) the arena. At most
        # SHAPES_KEPT sets are kept, least recently used out first: a server fed text of every length would
        # otherwise keep an arena for each.
        self.plans: OrderedDict[str, planner.Plan] = OrderedDict(plans or {})
        self.static = folding.static_steps(self.program.steps, graph.weights, self.input_names)
        self.folded: OrderedDict[str, dict[str, Any]] = OrderedDict()  # shape key -> results of the static steps
        # Plans are shared; arenas are per thread, so that one engine may run in several threads at once.
        self._local = threading.local()
        self._lock = threading.Lock()

    def plan_for(self, feeds: dict[str, Any]) -> planner.Plan | None:
        """The memory plan used for inputs of these shapes (made on the first run at them)."""
        return self.plans.get(shape_key(feeds))

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        self._check(feeds)
        env: dict[str, Any] = dict(self.graph.weights)
        env.update(feeds)
        key = shape_key(feeds)
        self._touch(key)
        folded = self.folded.get(key)
        if folded is not None:
            env.update(folded)
            collect = None
        else:
            collect = {}  # the first run at these shapes keeps what the static steps compute
        if self.memory == "arena":
            self._run_planned(env, key, collect)
        else:
            self.program.execute(env, free=self.memory == "free", static=self.static, folded=collect)
        if collect is not None:
            self.folded[key] = collect
        wanted = outputs or self.output_names
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise LiteInputError(f"model {self.graph.name!r} has no output(s) {unknown}; outputs: {self.output_names}")
        return {name: _writable(env[name]) for name in wanted}

    def _arenas(self) -> OrderedDict[str, tuple]:
        """This thread's arenas, by shape key."""
        return self._local.__dict__.setdefault("arenas", OrderedDict())

    def _touch(self, key: str) -> None:
        """Mark `key` as just used, and drop the least recently used sets of shapes beyond SHAPES_KEPT."""
        with self._lock:  # plans and folded results are shared between threads
            for cache in (self.plans, self.folded, self._arenas()):
                if key in cache:
                    cache.move_to_end(key)
                while len(cache) > SHAPES_KEPT - (key not in cache):
                    cache.popitem(last=False)

    def _run_planned(self, env: dict[str, Any], key: str, collect: dict[str, Any] | None) -> None:
        arenas = self._arenas()
        arena, plan = arenas.get(key), self.plans.get(key)  # another thread may drop the plan: read it once
        if arena is None and plan is not None:
            arena = arenas[key] = _views(plan)
        if arena is not None:
            buffer, views, aliases = arena
            self.program.execute(env, views=views, arena=buffer, static=self.static, folded=collect, aliases=aliases)
            return
        trace: dict[str, tuple] = {}
        aliases: dict[str, str] = {}
        self.program.execute(env, trace=trace, static=self.static, folded=collect, aliases=aliases)
        steps_writes = [s.outputs for s in self.program.steps]
        spans = planner.lifetimes(self.program.reads, steps_writes)
        self.plans[key] = planner.plan(trace, {n: spans[n] for n in [*trace, *aliases]}, aliases)

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


def _detach(
    env: dict[str, Any], names: list[str], views: dict[str, np.ndarray], arena: np.ndarray, aliases: dict[str, str]
) -> None:
    """Copy out values that are views into another tensor's arena slot (Reshape of an intermediate that is a
    graph output, a sequence of slices): that slot is reused once its own tensor is dead. The plan's aliases
    stay views: their base tensor's slot is kept until their last reader."""
    for name in names:
        if not name or name in views or name in aliases:
            continue
        value = env.get(name)
        if isinstance(value, np.ndarray) and np.may_share_memory(value, arena):
            env[name] = value.copy()
        elif isinstance(value, list):
            env[name] = [v.copy() if isinstance(v, np.ndarray) and np.may_share_memory(v, arena) else v for v in value]


def _view_of(step: Step, env: dict[str, Any], trace: dict[str, tuple], aliases: dict[str, str], keep) -> bool:
    """While tracing: when a Reshape-like step gave a view of an input that will live in the arena, record its
    output as an alias of that input's storage instead of planning it a slot of its own (no copy)."""
    if step.node.op not in VIEW_OPS or len(step.outputs) != 1 or not step.inputs or step.outputs[0] in keep:
        return False
    source, name = step.inputs[0], step.outputs[0]
    base = aliases.get(source, source)
    value, origin = env.get(name), env.get(source)
    if base not in trace or not isinstance(value, np.ndarray) or not isinstance(origin, np.ndarray):
        return False
    if not np.shares_memory(value, origin):
        return False
    aliases[name] = base
    return True


def _writable(value: Any) -> Any:
    """Outputs are the caller's to change; folded results and memory-mapped weights are read-only."""
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return value.copy()
    return value


def shape_key(feeds: dict[str, Any]) -> str:
    """Names, shapes and dtypes of a set of inputs, as the key of their memory plan ("x:1x3x8x8:float32")."""
    parts = []
    for name, value in sorted(feeds.items()):
        shape = "x".join(str(d) for d in getattr(value, "shape", ())) or "scalar"
        parts.append(f"{name}:{shape}:{getattr(value, 'dtype', type(value).__name__)}")
    return ";".join(parts)


def _views(plan: planner.Plan) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    arena = np.empty(max(plan.arena_bytes, 1), dtype=np.uint8)
    views = {
        s.name: np.ndarray(s.shape, dtype=np.dtype(s.dtype), buffer=arena, offset=s.offset) for s in plan.slots.values()
    }
    return arena, views, plan.aliases
