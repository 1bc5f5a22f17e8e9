"""ONNX Runtime's transformer fusions for the onnxruntime backend (`ferry/exporters/ort_fusion.py`):
transformers models export with eager attention, ORT fuses it into Attention once, the fused graph is
checked and recorded in the package, and it computes what the package's own graph computes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper

import ferry
from conftest import tiny_bert
from ferry.exporters.ort_fusion import attention_size, looks_like_transformer


@pytest.fixture(scope="module")
def bert_and_module(tmp_path_factory):
    result, encoder = tiny_bert(tmp_path_factory.mktemp("bert") / "bert")
    return result.package, encoder


@pytest.fixture
def bert(bert_and_module, tmp_path):
    return ferry.load(shutil.copytree(bert_and_module[0].root, tmp_path / "bert"))


def predictor(package, fusion=True):
    config = ferry.Config(package.root)
    config.set_backend("onnxruntime")
    config.switch_transformer_fusion(fusion)
    return ferry.create_predictor(config)


MASKS = {
    "right padding": (np.arange(16)[None] < np.array([[16], [9], [3]])).astype(np.int64),
    "scattered zeros": np.random.default_rng(1).integers(0, 2, (3, 16)),  # ORT's default mask index got this wrong
}


@pytest.mark.parametrize("mask", list(MASKS), ids=list(MASKS))
def test_the_fused_graph_computes_what_the_package_computes(bert, mask):
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 100, (3, 16)), "attention_mask": MASKS[mask]}
    fused = predictor(bert)
    assert "transformer fusions: EmbedLayerNormalization 1, Attention 2" in fused.backend
    np.testing.assert_allclose(
        fused.predict(feeds)["hidden"], predictor(bert, False).predict(feeds)["hidden"], atol=1e-5
    )
    record = ferry.load(bert.root).manifest.engines["onnxruntime-fused"]
    assert record["options"]["fused"]["Attention"] == 2 and record["files"] == ["model.onnx"]


def test_transformers_models_export_with_eager_attention_and_get_theirs_back(bert_and_module):
    package, encoder = bert_and_module
    assert encoder.bert.config._attn_implementation == "sdpa"  # put back after the export
    assert "Softmax" in {n.op_type for n in package.graph_proto().graph.node}  # the eager form, written out
    assert attention_size(package) == (2, 32) and looks_like_transformer(package)


def test_a_graph_without_attention_is_left_alone_and_its_refusal_remembered(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["s"], axis=-1),
             helper.make_node("LayerNormalization", ["s", "g"], ["y"], axis=-1)]  # fmt: skip
    inits = [
        helper.make_tensor(n, TensorProto.FLOAT, d, np.ones(d).ravel().tolist()) for n, d in (("w", [4, 4]), ("g", [4]))
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g", [vi("x", TensorProto.FLOAT, ["batch", 4])], [vi("y", TensorProto.FLOAT, ["batch", 4])], inits
    )
    package = ferry.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "p")
    assert looks_like_transformer(package)
    assert "transformer fusions" not in predictor(package).backend
    record = ferry.load(package.root).manifest.engines["onnxruntime-fused"]
    assert record["files"] == [] and "fused no attention" in record["refused"]
    before = (package.root / "ferry.json").stat().st_mtime_ns
    predictor(package)  # the refusal is read, not found again
    assert (package.root / "ferry.json").stat().st_mtime_ns == before


def test_models_that_are_not_transformers_are_not_asked(tmp_path):
    from conftest import make_mlp

    package = ferry.save(make_mlp(), tmp_path / "mlp")
    assert not looks_like_transformer(package)
    predictor(package)
    assert not ferry.load(package.root).manifest.engines
