"""Input and output handles, as in Paddle Inference: reshape, copy_from_cpu, share_external_data, copy_to_cpu.

A handle belongs to one predictor; give each thread its own predictor (`clone()` shares weights).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ferry.errors import InputError
from ferry.package.manifest import TensorSpec


class _Handle:
    def __init__(self, spec: TensorSpec):
        self.spec = spec
        self.array: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> str:
        return self.spec.dtype


class InputHandle(_Handle):
    def __init__(self, model: str, spec: TensorSpec, share: Any):
        super().__init__(spec)
        self._model = model
        self._share = share  # the session's zero-copy wrapper
        self._shape: tuple[int, ...] | None = None
        self.value: Any = None  # what the backend reads: the array, or a wrapper around its memory

    def reshape(self, shape: list[int] | tuple[int, ...]) -> None:
        self._shape = tuple(int(d) for d in shape)

    def shape(self) -> list[int]:
        if self.array is not None:
            return list(self.array.shape)
        return list(self._shape or ())

    def copy_from_cpu(self, data: np.ndarray) -> None:
        """Copy `data` into the handle; later changes to `data` do not reach the model."""
        array = np.array(self._require_array(data), copy=True, order="C")
        self._set(self._fit_shape(array))

    def share_external_data(self, data: np.ndarray) -> None:
        """Let the model read `data` in place: no copy is made, so keep it alive and unchanged until run()."""
        array = self._require_array(data)
        if not array.flags.c_contiguous:
            raise InputError(
                f"model {self._model!r}, input {self.name!r}: share_external_data needs a C-contiguous array "
                "(use np.ascontiguousarray, or copy_from_cpu)"
            )
        array = self._fit_shape(array)
        self.array = array
        self.value = self._share(array) if array.dtype.kind not in "OUS" else array

    def _set(self, array: np.ndarray) -> None:
        self.array = array
        self.value = array

    def _require_array(self, data: Any) -> np.ndarray:
        if not isinstance(data, np.ndarray):
            raise InputError(
                f"model {self._model!r}, input {self.name!r}: expected a numpy.ndarray, got {type(data).__name__}"
            )
        return data

    def _fit_shape(self, array: np.ndarray) -> np.ndarray:
        if self._shape is None or array.shape == self._shape:
            return array
        if math.prod(self._shape) != array.size:
            raise InputError(
                f"model {self._model!r}, input {self.name!r}: reshape({list(self._shape)}) holds "
                f"{math.prod(self._shape)} elements, but the data has {array.size} (shape {list(array.shape)})"
            )
        return array.reshape(self._shape)


class OutputHandle(_Handle):
    def shape(self) -> list[int]:
        return [] if self.array is None else list(self.array.shape)

    def copy_to_cpu(self) -> np.ndarray:
        if self.array is None:
            raise InputError(f"output {self.name!r} has no value yet: call predictor.run() first")
        return self.array
