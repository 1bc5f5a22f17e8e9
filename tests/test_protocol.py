"""`ferry.protocol`: tensors from the wire, strictly, with sizes checked before anything is allocated."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from ferry import errors
from ferry.errors import RequestError
from ferry.protocol.tensors import (
    array_from_answer,
    array_from_bytes,
    array_from_json,
    array_from_values,
    check_shape,
    json_nested,
    json_values,
)

F32, I32, I8, U8, BOOL, OBJ = (np.dtype(t) for t in (np.float32, np.int32, np.int8, np.uint8, bool, object))


@pytest.mark.parametrize(
    "values, dtype, message",
    [
        (["4"], F32, "element 0 is '4' (str); FP32 takes a number"),
        ([1.0, True], F32, "element 1 is True (bool); FP32 takes a number"),
        ([None], F32, "element 0 is None (NoneType)"),
        ([1e300], F32, "element 0 is 1e+300 (float); FP32 takes a finite number"),
        ([1.0] * 100 + [2.9], I32, "element 100 is 2.9 (float); INT32 takes an integer"),
        ([300], I8, "element 0 is 300 (int); INT8 takes an integer within its range"),
        ([-1], U8, "element 0 is -1 (int); UINT8 takes a non-negative integer"),
        ([1e30], I32, "element 0 is 1e+30"),
        ([True, 1], BOOL, "element 1 is 1 (int); BOOL takes true or false"),
        ([1], OBJ, "element 0 is 1 (int); BYTES takes a string"),
        ([10**400], F32, "element 0 is"),
    ],
)
def test_values_of_the_wrong_kind_are_refused_naming_the_element(values, dtype, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        array_from_values(values, dtype, (len(values),), "x")


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        ([1, 2.5], F32, np.array([1.0, 2.5], np.float32)),
        ([3.0, -4], I32, np.array([3, -4], np.int32)),
        ([127, -128], I8, np.array([127, -128], np.int8)),
        ([True, False], BOOL, np.array([True, False])),
    ],
)
def test_values_of_the_right_kind_are_taken_exactly(values, dtype, expected):
    got = array_from_values(values, dtype, (len(values),), "x")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


def test_nested_and_flat_json_give_the_same_array():
    nested = array_from_json([[1, 2], [3, 4]], F32, (2, 2), "x")
    flat = array_from_json([1, 2, 3, 4], F32, (2, 2), "x")
    np.testing.assert_array_equal(nested, flat)


def deep_list(depth: int) -> list:
    data: list = [1.0]
    for _ in range(depth):
        data = [data]
    return data


@pytest.mark.parametrize(
    "data, shape, message",
    [
        (deep_list(1000), (1,), "nested deeper"),
        ([[1], 2], (2,), "mixes lists and values"),
        ([1, 2, 3], (2, 2), "needs 4 elements, the data has 3"),
    ],
)
def test_malformed_json_data(data, shape, message):
    with pytest.raises(RequestError, match=message):
        array_from_json(data, F32, shape, "x")


@pytest.mark.parametrize(
    "shape, message",
    [
        ([1] * 70, "rank 70 is over the limit"),
        ([-1], "non-negative"),
        ([True], "non-negative"),
        ("4", "a list"),
        ([0, 2**62], "larger than any tensor"),
    ],
)
def test_shapes_are_checked(shape, message):
    with pytest.raises(RequestError, match=message):
        check_shape(shape, "x")


def test_a_huge_declared_bytes_shape_is_refused_before_allocating():
    raw = (5).to_bytes(4, "little") + b"hello"  # one BYTES element, 9 bytes
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match=r"declares 268435456 BYTES elements"):
            array_from_bytes(raw, OBJ, (2**28,), "x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # 2**28 object slots would be 2 GiB


@pytest.mark.parametrize("shape", [(2**39,), (2**20, 2**19)])
def test_huge_numeric_shapes_are_refused_by_size(shape):
    with pytest.raises(RequestError, match="needs"):
        array_from_bytes(b"\0" * 16, F32, shape, "x")


def test_non_finite_outputs_are_valid_json_and_read_back():
    out = np.array([[1.5, math.nan], [math.inf, -math.inf]], np.float32)
    text = json.dumps({"data": json_values(out), "nested": json_nested(out)}, allow_nan=False)
    doc = json.loads(text)
    assert doc["data"] == [1.5, "NaN", "Infinity", "-Infinity"]
    assert doc["nested"] == [[1.5, "NaN"], ["Infinity", "-Infinity"]]
    back = array_from_answer(doc["data"], F32, (2, 2), "y")
    np.testing.assert_array_equal(back, out)  # NaN == NaN in assert_array_equal


def test_status_lives_with_the_error_class_and_clients_map_it_back():
    assert errors.status_for(errors.PayloadTooLargeError("x")) == (413, "RESOURCE_EXHAUSTED")
    assert errors.status_for(errors.RequestError("x")) == (400, "INVALID_ARGUMENT")
    assert errors.status_for(errors.ManifestError("x")) == (400, "INVALID_ARGUMENT")
    assert errors.status_for(ValueError("x")) == (500, "INTERNAL")
    for cls in (errors.ModelNotFoundError, errors.UnavailableError, errors.DeadlineError, errors.UnauthorizedError):
        assert errors.error_for_status(http_status=cls.http_status) is cls
        assert errors.error_for_status(grpc_code=cls.grpc_code) is cls
    assert errors.error_for_status(http_status=400) is errors.InputError
    assert errors.error_for_status(http_status=500) is errors.ServingError
