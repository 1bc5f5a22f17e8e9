"""TensorFlow models (SavedModel, frozen GraphDef, .tflite) to packages through tf2onnx: parity against
TensorFlow, the signature's names kept, the batch axis named, errors that name the op; API and CLI.
The models are built by `tests/tf_models.py` in a child process, as the converter runs TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ferry
from ferry.cli import main
from ferry.converters import detect
from ferry.errors import ConversionError


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tf")
    subprocess.run([sys.executable, str(Path(__file__).with_name("tf_models.py")), str(out)], check=True)
    return out


CASES = [
    # source, options, inputs as the package names them, outputs
    ("keras_saved_model", {}, {"features": ("batch", 8)}, {"output_0": ("batch", 3)}),
    ("module_saved_model", {"signature": "predict"}, {"x": ("batch", 4), "ids": ("batch",)},
     {"scores": ("batch", 2), "shifted": ("batch",)}),
    ("frozen.pb", {}, {"features": ("batch", 8)}, {"Identity": ("batch", 3)}),
    ("model.tflite", {}, {"features": ("batch", 8)}, {"output_0": ("batch", 3)}),
]  # fmt: skip


@pytest.mark.parametrize("source,options,inputs,outputs", CASES, ids=[c[0] for c in CASES])
def test_tensorflow_models_convert_with_parity_and_names(tf_dir, tmp_path, source, options, inputs, outputs):
    assert detect(tf_dir / source) == "tensorflow"
    result = ferry.convert(tf_dir / source, tmp_path / "pkg", **options)
    assert result.parity is not None and result.parity.max_abs < 1e-4, result.parity
    signature = result.package.signature
    assert {s.name: tuple(s.shape) for s in signature.inputs} == inputs
    assert {s.name: tuple(s.shape) for s in signature.outputs} == outputs
    assert result.package.manifest.provenance.framework.startswith("tensorflow")
    # The named batch axis takes any size, not only the check's 2 rows.
    feeds = {s.name: np.ones([5 if d == "batch" else d for d in s.shape], s.dtype) for s in signature.inputs}
    got = ferry.create_predictor(ferry.Config(tmp_path / "pkg")).predict(feeds)
    assert all(v.shape[0] == 5 for v in got.values())


def test_example_inputs_are_what_the_check_runs(tf_dir, tmp_path):
    x = np.linspace(-1, 1, 3 * 8, dtype=np.float32).reshape(3, 8)
    result = ferry.convert(tf_dir / "keras_saved_model", tmp_path / "pkg", example_inputs=x)
    assert result.parity.max_abs < 1e-4
    probs = ferry.create_predictor(ferry.Config(tmp_path / "pkg")).predict({"features": x})["output_0"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "source,options,message",
    [
        ("keras_saved_model", {"signature": "nope"}, "no signature 'nope'; it has ['serve', 'serving_default']"),
        ("frozen.pb", {"inputs": ["missing:0"]}, "missing:0"),
        ("unconvertible_saved_model", {}, "SelfAdjointEigV2 at node 'PartitionedCall/SelfAdjointEigV2'"),
        ("module_saved_model", {"signature": "predict", "example_inputs": np.ones((2, 4), np.float32)},
         "pass example_inputs as a dict"),
    ],
)  # fmt: skip
def test_errors_say_what_went_wrong_and_write_nothing(tf_dir, tmp_path, source, options, message):
    with pytest.raises(ConversionError) as info:
        ferry.convert(tf_dir / source, tmp_path / "pkg", **options)
    assert message in str(info.value)
    assert not (tmp_path / "pkg").exists()


def test_a_broken_file_gets_tensorflows_reason(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(ConversionError, match="model.tflite: TensorFlow: ValueError: Model provided must have"):
        ferry.convert(tmp_path / "model.tflite", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_converts_a_saved_model_with_its_signature(tf_dir, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert main(["convert", str(tf_dir / "module_saved_model"), "-o", str(out), "--signature", "predict"]) == 0
    printed = capsys.readouterr().out
    assert "tf2onnx (saved_model)" in printed and "scores: max abs diff" in printed
    assert ferry.load(out).signature.input_names == ["ids", "x"]


def test_cli_takes_a_graphdefs_tensor_names(tf_dir, tmp_path, capsys):
    out = tmp_path / "pkg"
    args = ["convert", str(tf_dir / "frozen.pb"), "-o", str(out), "--inputs", "features:0", "--outputs", "Identity"]
    assert main(args) == 0
    assert "Identity: max abs diff" in capsys.readouterr().out
