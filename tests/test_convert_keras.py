"""Keras 3 models (.keras and legacy .h5) to packages through Keras' own ONNX export on the torch backend:
parity against Keras, names kept, the batch axis named, from Python and the CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ferry
from ferry.cli import main
from ferry.errors import ConversionError

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")


def sequential():
    layers = [keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.3),
              keras.layers.Dense(4, activation="softmax", name="probs")]  # fmt: skip
    return keras.Sequential([keras.Input((12,), name="features"), *layers])


def functional_two_inputs():
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8)(meta)])
    score = keras.layers.Dense(1, name="score")(x)
    label = keras.layers.Dense(3, activation="softmax", name="label")(x)
    return keras.Model([image, meta], [score, label])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("build", [sequential, functional_two_inputs])
def test_keras_files_convert_with_parity(tmp_path, build, suffix):
    model = build()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    result = ferry.convert(path, tmp_path / "pkg")
    assert result.parity is not None  # checked against Keras' own predict
    sig = result.package.signature
    assert sig.input_names == [t.name.split(":")[0] for t in model.inputs]
    assert sig.output_names == (list(model.output_names) if hasattr(model, "output_names") else ["probs"])
    assert all(spec.shape[0] == "batch" for spec in [*sig.inputs, *sig.outputs])
    assert result.package.manifest.provenance.framework == "keras"
    rng = np.random.default_rng(1)
    feeds = {t.name.split(":")[0]: rng.standard_normal([7, *t.shape[1:]]).astype("float32") for t in model.inputs}
    want = model.predict([feeds[n] for n in sig.input_names], verbose=0)
    want = want if isinstance(want, list) else [want]
    for backend in ("onnxruntime", "openvino"):
        config = ferry.Config(result.package)
        config.set_backend(backend)
        got = ferry.create_predictor(config).predict(feeds)
        for name, expected in zip(sig.output_names, want):
            np.testing.assert_allclose(got[name], expected, atol=1e-4, rtol=1e-3)


def test_keras_cli_and_a_broken_file(tmp_path, capsys):
    sequential().save(tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "pkg")]) == 0
    assert "keras.export" in capsys.readouterr().out
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ConversionError, match="Keras could not load"):
        ferry.convert(tmp_path / "broken.keras", tmp_path / "out")


def test_a_model_object_converts_too(tmp_path):
    model = sequential()
    result = ferry.convert(model, tmp_path / "obj", example_inputs=np.ones((3, 12), np.float32))
    assert result.package.signature.outputs[0].name == "probs"
