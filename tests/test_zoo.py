"""A fast subset of the model zoo (`benchmarks/zoo.py`): one model per source framework, converted with
its parity check and run on every backend (the web one in chromium). The full zoo's table is `docs/zoo.md`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import zoo  # noqa: E402
from zoo_web import WebRunner  # noqa: E402

SUBSET = ["bert", "squeezenet1_0", "logistic-regression", "keras-functional", "tf-module-embedding", "pp-ocr-cls"]
# What an engine cannot take, as the zoo lists it: the classic-ML operators of skl2onnx (ai.onnx.ml).
ENGINE_LIMITS = {
    ("logistic-regression", "openvino"): "No conversion rule found for operations: ai.onnx.ml.LinearClassifier",
    ("logistic-regression", "lite"): "no lite kernel: ai.onnx.ml.LinearClassifier",
    ("logistic-regression", "ncnn"): "pnnx reads standard ONNX operators only",
    ("logistic-regression", "mnn"): "These Op Not Support: ONNX::LinearClassifier",
    # transformers' attention mask: torch.where, logical_and have no ncnn layer
    ("bert", "ncnn"): "torch.where at layer",
    ("tf-module-embedding", "ncnn"): "Gather at layer",
}


# MNN runs transformers' masked attention a little off ONNX Runtime (0.005-0.017 on BERT's hidden states)
LOOSER = {("bert", "mnn"): 0.05}


@pytest.fixture(scope="module")
def web():
    with WebRunner() as runner:
        yield runner


@pytest.mark.parametrize("name", SUBSET)
def test_zoo_model_converts_and_runs_on_every_backend(tmp_path, web, name):
    row = zoo.run_model(next(z for z in zoo.ZOO if z.name == name), tmp_path, runs=1, web=web)
    assert "convert_error" not in row, row.get("trace")
    assert row["parity"] is not None and row["parity"] < 1e-4
    for backend in zoo.BACKENDS:
        cell = row[backend]
        limit = ENGINE_LIMITS.get((name, backend))
        if limit:
            assert limit in cell.get("error", ""), cell
        else:
            assert "error" not in cell, cell
            assert cell["diff"] <= LOOSER.get((name, backend), zoo.TOLERANCE), (backend, cell)


def test_the_zoo_has_thirty_models_from_every_framework():
    assert len(zoo.ZOO) >= 30
    frameworks = {"transformers", "paddle", "sklearn", "keras", "tensorflow", "onnx"}
    assert {z.source.split()[0] for z in zoo.ZOO} >= frameworks
    assert len({z.name for z in zoo.ZOO}) == len(zoo.ZOO)
