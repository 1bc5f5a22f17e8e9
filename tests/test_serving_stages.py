"""Multi-stage pipelines (`serving/stages.py`): fan-out into items, per-item model steps batched across
items and requests, padding to shared shapes, gather; errors that name the step; config checked at load."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ferry
from ferry.errors import ConfigError
from ferry.serving.stages import parse
from serving_helpers import get, post, running_server

HELPERS = '''
import numpy as np

def ragged(x, lengths):
    """One item per row: the row's first lengths[i] values, as [1, lengths[i]]."""
    return {"piece": [x[i : i + 1, : int(n)] for i, n in enumerate(lengths)]}

def broken(x, lengths):
    raise ValueError("this step always fails")

class Scaled:
    """A hook class: made once, called per step; it keeps how many times it ran."""
    def __init__(self):
        self.calls = 0
    def __call__(self, piece_sum):
        self.calls += 1
        return {"sums": np.concatenate(piece_sum) * 10, "calls": np.array([self.calls])}
'''


def summer_model():
    """y[batch, 1] = the sum of x[batch, w] over w: zero padding on w changes nothing."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "summer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def pipeline_config(fan_out: str = "stagehelpers:ragged") -> dict:
    return {"pipeline": {
        "inputs": {"x": "FP32", "lengths": "INT64"},
        "outputs": ["sums"],
        "steps": [
            {"name": "split", "function": fan_out, "inputs": ["x", "lengths"], "outputs": ["piece"], "fan_out": True},
            {"name": "sum", "model": "summer", "inputs": {"x": "piece"}, "outputs": {"y": "piece_sum"},
             "pad": {"axis": 1, "multiple": 8}},
            {"name": "join", "function": "stack", "inputs": ["piece_sum"], "outputs": ["sums"], "gather": True},
        ]}}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("stages")
    ferry.save(summer_model(), root / "summer" / "1", name="summer", version="1")
    (root / "summer" / "config.json").write_text(json.dumps({"max_batch_size": 64, "batch_delay_ms": 20}))
    (root / "rowsums").mkdir()
    (root / "rowsums" / "config.json").write_text(json.dumps(pipeline_config()))
    (root / "scaled").mkdir()
    scaled = pipeline_config()
    scaled["pipeline"]["steps"][2] = {"name": "join", "function": "stagehelpers:Scaled", "inputs": ["piece_sum"],
                                      "outputs": ["sums", "calls"], "gather": True}  # fmt: skip
    scaled["pipeline"]["outputs"] = ["sums", "calls"]
    (root / "scaled" / "config.json").write_text(json.dumps(scaled))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text(json.dumps(pipeline_config("stagehelpers:broken")))
    helpers = tmp_path_factory.mktemp("helpers")
    (helpers / "stagehelpers.py").write_text(HELPERS)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(helpers) + (os.pathsep + old if old else "")
    try:
        with running_server(root) as s:
            yield s
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


def body(x: np.ndarray, lengths: list[int]) -> bytes:
    return json.dumps({"inputs": [
        {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()},
        {"name": "lengths", "shape": [len(lengths)], "datatype": "INT64", "data": lengths},
    ]}).encode()  # fmt: skip


def expected(x: np.ndarray, lengths: list[int]) -> np.ndarray:
    return np.array([[x[i, :n].sum()] for i, n in enumerate(lengths)], np.float32)


def test_fan_out_per_item_model_and_gather(server):
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    lengths = [3, 8, 1, 5, 2]
    status, _, data = post(server, "/v2/models/rowsums/infer", body(x, lengths))
    assert status == 200, data
    out = json.loads(data)["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), expected(x, lengths), rtol=1e-5)


def test_items_of_concurrent_requests_are_batched_together(server):
    rng = np.random.default_rng(1)
    cases = [(rng.standard_normal((4, 8)).astype(np.float32), [int(n) for n in rng.integers(1, 9, 4)])
             for _ in range(8)]  # fmt: skip
    before = json.loads(get(server, "/v2/models/summer/stats")[1])["model_stats"][0]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda case: post(server, "/v2/models/rowsums/infer", body(*case)), cases))
    for (x, lengths), (status, _, data) in zip(cases, replies):
        assert status == 200
        out = json.loads(data)["outputs"][0]
        np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), expected(x, lengths), rtol=1e-5)
    after = json.loads(get(server, "/v2/models/summer/stats")[1])["model_stats"][0]
    items = after["inference_count"] - before.get("inference_count", 0)
    runs = after["execution_count"] - before.get("execution_count", 0)
    assert items == 32 and runs < 32 / 2, (items, runs)  # padded to one width, the items share runs


def test_a_request_with_no_items_still_gathers(server):
    status, _, data = post(server, "/v2/models/rowsums/infer", body(np.zeros((0, 8), np.float32), []))
    assert status == 200 and json.loads(data)["outputs"][0]["shape"] == [0]


def test_a_failing_step_is_named_and_timed(server):
    status, _, data = post(server, "/v2/models/broken/infer", body(np.ones((1, 8), np.float32), [4]))
    assert status == 500
    assert "step 'split' failed: ValueError: this step always fails" in json.loads(data)["error"]
    text = get(server, "/metrics")[1].decode()
    assert 'ferry_pipeline_step_seconds_count{pipeline="rowsums",step="sum"}' in text
    status, _, data = post(server, "/v2/models/rowsums/infer", body(np.ones((1, 8), np.float32), [9]))
    assert status == 200  # a slice past the row's end is numpy's business: 8 values summed
    index = {r["name"]: r for r in json.loads(post(server, "/v2/repository/index", b"{}")[2])}
    assert index["rowsums"]["state"] == "READY"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["steps"].pop(), "fans out but never gathers"),
        (lambda c: c["steps"][1]["inputs"].update(x="nowhere"), "reads ['nowhere']"),
        (lambda c: c["steps"][0].update(model="m"), "either a 'model' or a 'function'"),
        (lambda c: c["steps"][1].update(pad={"axis": 1}), "'pad' is"),
        (lambda c: c.update(outputs=["piece_sum"]), "no request tensor"),
        (lambda c: c["steps"][2].update(gather=False), "never gathers"),
    ],
)
def test_pipeline_configs_are_checked_at_load(change, message):
    config = pipeline_config()["pipeline"]
    change(config)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse("p", config, Path("config.json"))


def test_builtin_rows_and_stack_are_inverses():
    from ferry.serving.functions import resolve

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    (items,) = resolve("rows")(x=x)
    assert [i.shape for i in items] == [(1, 4)] * 3
    (back,) = resolve("stack")(x=items)
    np.testing.assert_array_equal(back, x)
    with pytest.raises(ConfigError, match="not a built-in"):
        resolve("no_such_function")


def test_a_hook_class_is_made_once_and_called_per_request(server):
    x = np.ones((2, 8), np.float32)
    calls = []
    for _ in range(2):
        status, _, data = post(server, "/v2/models/scaled/infer", body(x, [2, 3]))
        assert status == 200, data
        outputs = {o["name"]: o["data"] for o in json.loads(data)["outputs"]}
        assert outputs["sums"] == [20.0, 30.0]
        calls.append(outputs["calls"][0])
    assert calls == [1, 2]  # the same instance both times


def test_a_broken_pipeline_is_shown_and_the_rest_serve(tmp_path):
    """A pipeline whose config does not parse, and one whose function does not import, are each left out
    with their reason in the index; the server starts and the other models answer."""
    ferry.save(summer_model(), tmp_path / "summer" / "1", name="summer", version="1")
    (tmp_path / "typo").mkdir()
    broken = pipeline_config()
    broken["pipeline"]["steps"].pop()  # fans out, never gathers
    (tmp_path / "typo" / "config.json").write_text(json.dumps(broken))
    (tmp_path / "noimport").mkdir()
    (tmp_path / "noimport" / "config.json").write_text(json.dumps(pipeline_config("no_such_module:split")))
    with running_server(tmp_path) as s:
        index = {r["name"]: r for r in json.loads(post(s, "/v2/repository/index", b"{}")[2])}
        assert "never gathers" in index["typo"]["reason"] and "no_such_module" in index["noimport"]["reason"]
        x = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
        assert post(s, "/v2/models/summer/infer", x.encode())[0] == 200
