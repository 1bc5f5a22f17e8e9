"""Run the ONNX backend node test cases (built in memory by the onnx package) through the lite engine."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from onnx import numpy_helper

from ferry.exporters.onnx_to_lite import from_onnx
from ferry.lite import Engine


@dataclass
class Outcome:
    name: str
    ok: bool
    reason: str = ""


def all_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases()


def _array(value):
    from onnx import TensorProto

    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_array(v) for v in value]
    return value


def _same(expected, got, rtol: float, atol: float) -> None:
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"expected a sequence of {len(expected)}"
        for e, g in zip(expected, got):
            _same(e, g, rtol, atol)
        return
    if expected is None:
        assert got is None, "expected an empty optional"
        return
    got = np.asarray(got)
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype, f"dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    if expected.dtype == object or expected.dtype.kind in "bUS":
        assert (got == expected).all(), "values differ"
    else:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)


def run_case(case) -> Outcome:
    try:
        engine = Engine(from_onnx(case.model))
    except Exception as exc:  # noqa: BLE001  (every failure is recorded with its reason)
        return Outcome(case.name, False, f"load: {type(exc).__name__}: {exc}"[:300])
    names = engine.input_names
    try:
        for inputs, outputs in case.data_sets:
            feeds = dict(zip(names, (_array(v) for v in inputs)))
            for _ in range(2):  # the first run plans the arena, the second runs in it
                with np.errstate(all="ignore"):
                    got = engine.run(feeds)
                for name, expected in zip(engine.output_names, outputs):
                    _same(_array(expected), got[name], case.rtol, case.atol)
    except Exception as exc:  # noqa: BLE001
        return Outcome(case.name, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    return Outcome(case.name, True)
