"""Shape folding: which steps of a graph give the same result on every run with inputs of the same shapes.

Exporters with dynamic axes (torch.onnx, paddle2onnx) compute Reshape targets, position ids and masks at run
time: chains of Shape -> Gather -> Unsqueeze -> Concat, Range, ConstantOfShape, Equal/Where on small shape
vectors. The optimizer cannot fold them because the shapes are not known before a run; for one set of input
shapes they are constants. The engine runs these steps once per set of input shapes (the key of the memory
plan), keeps their results, and skips them on later runs. On the small BERT they are 125 of 242 steps.

A step is static when every input is static (a weight, or the result of a static step) and its op is
deterministic; Shape and Size are static when their input's shape is static. A tensor's shape is static when
its producer is static, or when the op's output shape follows from input shapes alone (SHAPE_FROM_SHAPES), or
from the shape of input 0 and the values of the others (SHAPE_FROM_FIRST). Graph inputs have static shapes by
definition of the key. Everything else (data-dependent shapes such as NonZero, control flow, ops not listed)
counts as dynamic, which only costs a missed fold, never a wrong result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# Ops that must run every time: their results are random, or they run subgraphs.
NEVER = {
    "Bernoulli", "Dropout", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "If", "Loop", "Scan", "SequenceMap",
}  # fmt: skip

# Output shape determined by the input shapes and the attributes alone.
SHAPE_FROM_SHAPES = {
    "Abs", "Add", "And", "BatchNormalization", "BiasGelu", "Cast", "CastLike", "Ceil", "Clip", "Concat", "Conv",
    "ConvTranspose", "Cos", "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Flatten", "Floor", "FusedConv",
    "FusedGemm", "Gather", "GatherElements", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool",
    "AveragePool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu",
    "RMSNormalization", "Round", "Shape", "Sigmoid", "Sign", "Sin", "Size", "SkipLayerNormalization", "Softmax",
    "SoftmaxAttention", "Softplus", "Sqrt", "Sub", "Sum", "Swish", "Tanh", "Transpose", "Trilu", "Where", "Xor",
}  # fmt: skip

# Output shape determined by input 0's shape and the values of the other inputs (axes, targets, pads, repeats).
SHAPE_FROM_FIRST = {
    "Expand", "Pad", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Reshape", "Slice", "Split", "Squeeze", "Tile",
    "Unsqueeze",
}  # fmt: skip


def static_steps(steps: Sequence[Any], weights: Iterable[str], inputs: Iterable[str]) -> list[bool]:
    """For each step (with .node.op, .inputs, .outputs, .graphs), whether its results are fixed by the
    weights and the input shapes."""
    values = set(weights)
    shapes = values | set(inputs)
    flags = []
    for step in steps:
        op, read = step.node.op, [n for n in step.inputs if n]
        if step.graphs or op in NEVER:
            static = False
        elif op in ("Shape", "Size"):
            static = read[0] in shapes
        else:
            static = all(n in values for n in read)
        flags.append(static)
        if static:
            values.update(step.outputs)
        if static or (
            (op in SHAPE_FROM_SHAPES and all(n in shapes for n in read))
            or (op in SHAPE_FROM_FIRST and read and read[0] in shapes and all(n in values for n in read[1:]))
        ):
            shapes.update(step.outputs)
    return flags


def freeze(value: Any) -> Any:
    """A cached result, read-only so that a kernel that wrote into its input would fail loudly."""
    if isinstance(value, np.ndarray):
        value = np.array(value)  # its own memory: not a view into a feed or an arena
        value.setflags(write=False)
    return value
