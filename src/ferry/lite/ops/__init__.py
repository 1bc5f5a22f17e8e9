"""Kernels, one function per ONNX op, grouped by kind. Importing this package registers them all."""

from . import attention, contrib, control, conv, elementwise, index, misc, nn, norm, quant, reduce, rnn, shape  # noqa: F401
