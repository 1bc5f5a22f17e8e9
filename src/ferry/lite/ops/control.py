"""Control flow (If, Loop, Scan), sequences and optionals. Subgraph attributes arrive as callables."""

from __future__ import annotations

import numpy as np

from ..registry import op
from .shape import scalar


@op("If")
def If(cond, *, then_branch, else_branch):
    return tuple((then_branch if bool(np.asarray(cond).reshape(-1)[0]) else else_branch)())


@op("Loop")
def Loop(trip_count=None, cond=None, *carried, body):
    state = list(carried)
    scans: list[list] = []
    i = 0
    go = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
    limit = None if trip_count is None else int(np.asarray(trip_count).reshape(-1)[0])
    while go and (limit is None or i < limit):
        out = body(np.array(i, np.int64), np.array(go), *state)
        go = bool(np.asarray(out[0]).reshape(-1)[0])
        state = list(out[1 : 1 + len(state)])
        extra = out[1 + len(state) :]
        if not scans:
            scans = [[] for _ in extra]
        for acc, value in zip(scans, extra):
            acc.append(value)
        i += 1
    if not scans:  # no iteration ran: empty scan outputs of the body's declared types
        declared = body.program.graph.outputs[1 + len(state) :]
        return tuple(state) + tuple(np.zeros(0, dtype=v.dtype or "float32") for v in declared)
    return tuple(state) + tuple(np.stack([np.asarray(v) for v in s]) for s in scans)


@op("Scan", since=9)
def Scan(*inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):  # fmt: skip
    n_state = len(inputs) - num_scan_inputs
    state, xs = list(inputs[:n_state]), inputs[n_state:]
    in_axes = scan_input_axes or [0] * num_scan_inputs
    in_dirs = scan_input_directions or [0] * num_scan_inputs
    xs = [np.moveaxis(np.flip(x, a) if d else x, a, 0) for x, a, d in zip(xs, in_axes, in_dirs)]
    steps = xs[0].shape[0] if xs else 0
    outs: list[list] = []
    for t in range(steps):
        result = body(*state, *[x[t] for x in xs])
        state = list(result[:n_state])
        if not outs:
            outs = [[] for _ in result[n_state:]]
        for acc, v in zip(outs, result[n_state:]):
            acc.append(v)
    out_axes = scan_output_axes or [0] * len(outs)
    out_dirs = scan_output_directions or [0] * len(outs)
    scanned = []
    for acc, a, d in zip(outs, out_axes, out_dirs):
        y = np.stack(acc)
        y = np.moveaxis(y, 0, a + y.ndim if a < 0 else a)
        scanned.append(np.flip(y, a) if d else y)
    return tuple(state) + tuple(scanned)


# --- sequences: Python lists of arrays ----------------------------------------------------------------------


@op("SequenceEmpty")
def SequenceEmpty(*, dtype=1):
    return []


@op("SequenceConstruct")
def SequenceConstruct(*xs):
    return list(xs)


@op("SequenceInsert")
def SequenceInsert(seq, x, position=None):
    out = list(seq)
    out.insert(len(out) if position is None else scalar(position), x)
    return out


@op("SequenceAt")
def SequenceAt(seq, position):
    return seq[scalar(position)]


@op("SequenceErase")
def SequenceErase(seq, position=None):
    out = list(seq)
    del out[-1 if position is None else scalar(position)]
    return out


@op("SequenceLength")
def SequenceLength(seq):
    return np.array(len(seq), np.int64)


@op("ConcatFromSequence")
def ConcatFromSequence(seq, *, axis, new_axis=0):
    return np.stack(seq, axis=axis) if new_axis else np.concatenate(seq, axis=axis)


@op("SplitToSequence")
def SplitToSequence(x, split=None, *, axis=0, keepdims=1):
    if split is None:
        parts = np.split(x, x.shape[axis], axis=axis)
        return [np.squeeze(p, axis) for p in parts] if not keepdims else parts
    split = np.asarray(split)
    if split.ndim == 0:
        size = int(split)
        return [np.take(x, range(s, min(s + size, x.shape[axis])), axis=axis) for s in range(0, x.shape[axis], size)]
    return np.split(x, np.cumsum(split)[:-1], axis=axis)


@op("SequenceMap")
def SequenceMap(seq, *more, body):
    n = len(seq)
    results: list[list] = []
    for i in range(n):
        args = [seq[i]] + [m[i] if isinstance(m, list) else m for m in more]
        out = body(*args)
        if not results:
            results = [[] for _ in out]
        for acc, v in zip(results, out):
            acc.append(v)
    return tuple(results)


# --- optionals: None stands for an empty optional -------------------------------------------------------


@op("Optional")
def Optional(x=None, *, type=None):  # noqa: A002
    return x


@op("OptionalHasElement")
def OptionalHasElement(x=None):
    return np.array(x is not None)


@op("OptionalGetElement")
def OptionalGetElement(x):
    if x is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return x
