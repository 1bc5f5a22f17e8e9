"""Models that someone else exported, shipped by pip packages: they must run on every backend as they come.

PP-OCR's direction classifier, as rapidocr-onnxruntime ships it, declares its batch axis as
`dim_value: -1` and its height and width as "?": older exporters' ways of saying "dynamic"."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import ferry


def rapidocr_model(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None and spec.origin, "rapidocr-onnxruntime is a test dependency (pip install -e '.[test]')"
    path = Path(spec.origin).parent / "models" / name
    assert path.is_file(), f"rapidocr-onnxruntime no longer ships {name}"
    return path


CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "lite"])
def test_ppocr_classifier_runs_on_every_backend_as_raw_onnxruntime_does(backend):
    path = rapidocr_model(CLS)
    x = np.random.default_rng(0).random((3, 3, 48, 192)).astype(np.float32)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    config = ferry.Config(path)
    config.set_backend(backend)
    (out,) = ferry.create_predictor(config).predict({"x": x}).values()
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_non_positive_and_question_mark_dims_are_dynamic_in_the_signature(tmp_path):
    path = rapidocr_model(CLS)
    assert ferry.load(path).signature.inputs[0].shape == ("batch", 3, "x_dim2", "x_dim3")
    package = ferry.convert(path, tmp_path / "cls").package
    spec = package.signature.inputs[0]
    assert spec.shape[0] == "batch" and package.signature.outputs[0].shape[0] == "batch"
    assert len(set(spec.shape[2:])) == 2  # height and width stay two dimensions, not one shared "?"
    # Other heights and widths, and other batch sizes, are taken.
    predictor = ferry.create_predictor(ferry.Config(package))
    for shape in [(1, 3, 48, 192), (4, 3, 32, 100)]:
        (out,) = predictor.predict({"x": np.zeros(shape, np.float32)}).values()
        assert out.shape == (shape[0], 2)
