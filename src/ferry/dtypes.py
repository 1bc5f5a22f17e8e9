"""One table of element types: ONNX enum <-> ferry name <-> numpy dtype.

ferry names are numpy's names ("float32", "int64", "bool"), plus "string" and "bfloat16".
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

_ONNX_TO_NAME: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
}
_NAME_TO_ONNX = {name: code for code, name in _ONNX_TO_NAME.items()}

DTYPE_NAMES = frozenset(_NAME_TO_ONNX)


def name_from_onnx(elem_type: int) -> str:
    try:
        return _ONNX_TO_NAME[elem_type]
    except KeyError:
        return TensorProto.DataType.Name(elem_type).lower()


def name_from_numpy(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "string"
    if dtype.name == "bfloat16":  # ml_dtypes, when a caller brings it
        return "bfloat16"
    return dtype.name


def numpy_from_name(name: str) -> np.dtype:
    if name == "string":
        return np.dtype(object)
    if name == "bfloat16":
        import ml_dtypes  # shipped with onnx

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
