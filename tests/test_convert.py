"""Converters, each with its numeric parity check: torch (dynamo and TorchScript), transformers BERT,
PaddlePaddle (PIR .json and legacy .pdmodel), scikit-learn (object, pickle, joblib), plain ONNX."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import ferry
from conftest import make_mlp, mlp_reference, tiny_bert
from ferry.converters.parity import compare
from ferry.errors import ConversionError, ParityError

torch = pytest.importorskip("torch")


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(self.drop(y))


class DataDependent(torch.nn.Module):
    """Python control flow on tensor values: torch.export (dynamo) refuses it, tracing accepts it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


def test_torch_export_dynamo_with_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    module = SmallCNN()
    result = ferry.export(module, torch.randn(2, 3, 8, 8), tmp_path / "cnn", input_names=["image"])
    assert result.converter == "torch.onnx (dynamo)"
    assert result.parity is not None and result.parity.max_abs < 1e-4
    assert "max abs diff" in str(result)
    pkg = result.package
    assert pkg.signature.inputs[0].shape == ("batch", 3, 8, 8)
    assert pkg.manifest.provenance.framework == "torch"
    assert "dynamo" in pkg.manifest.provenance.converter
    # The batch axis really is dynamic: batch 5 runs and matches torch.
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        want = module(x).numpy()
    got = ferry.create_predictor(ferry.Config(pkg)).predict({"image": x.numpy()})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_torch_falls_back_to_torchscript_and_says_so(tmp_path):
    result = ferry.export(DataDependent(), torch.ones(2, 3), tmp_path / "dd", input_names=["x"])
    assert result.converter == "torch.onnx (torchscript)"
    assert any(note.startswith("exporter dynamo:") for note in result.notes)
    assert "torchscript" in result.package.manifest.provenance.converter
    assert result.parity is not None


def test_torch_exporter_can_be_forced_and_fails_clearly(tmp_path):
    with pytest.raises(ConversionError, match="failed with every exporter: dynamo"):
        ferry.export(DataDependent(), torch.ones(2, 3), tmp_path / "dd", exporter="dynamo")


def test_torch_bad_arguments(tmp_path):
    with pytest.raises(ConversionError, match="example_inputs must be a torch.Tensor"):
        ferry.export(SmallCNN(), np.ones((1, 3, 8, 8)), tmp_path / "x")
    with pytest.raises(ConversionError, match="1 input_names"):
        ferry.export(SmallCNN(), torch.ones(1, 3, 8, 8), tmp_path / "x", input_names=["a"], output_names=["a", "b"])


def test_transformers_bert_exports_with_dynamic_batch_and_sequence(tmp_path):
    pytest.importorskip("transformers")
    result, encoder = tiny_bert(tmp_path / "bert", exporter="auto")
    assert result.parity is not None and result.parity.max_abs < 1e-4
    sig = result.package.signature
    assert sig.inputs[0].shape == ("batch", "sequence")
    ids2 = torch.randint(0, 100, (3, 9))
    mask2 = torch.ones(3, 9, dtype=torch.int64)
    mask2[0, 5:] = 0
    with torch.no_grad():
        want = encoder(ids2, mask2).numpy()
    got = ferry.create_predictor(ferry.Config(result.package)).predict(
        {"input_ids": ids2.numpy(), "attention_mask": mask2.numpy()}
    )["hidden"]
    np.testing.assert_allclose(got, want, atol=1e-4)


# --- PaddlePaddle ----------------------------------------------------------------------------------

PADDLE_SAVE = textwrap.dedent(
    """
    import sys, paddle
    from paddle.static import InputSpec
    paddle.seed(0)

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
            self.bn = paddle.nn.BatchNorm2D(8)
            self.fc = paddle.nn.Linear(8, 4)

        def forward(self, image):
            y = paddle.nn.functional.relu(self.bn(self.conv(image)))
            return self.fc(y.mean(axis=[2, 3]))

    net = Net()
    net.eval()
    paddle.jit.save(net, sys.argv[1], input_spec=[InputSpec([None, 3, 16, 16], "float32", "image")])
    """
)


@pytest.mark.parametrize(("pir", "suffix"), [("1", ".json"), ("0", ".pdmodel")])
def test_paddle_both_formats(tmp_path, pir, suffix):
    pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")
    prefix = tmp_path / "paddle" / "inference"
    env = {"FLAGS_enable_pir_api": pir, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    script = tmp_path / "save_paddle.py"  # paddle.jit.save reads the source, so it must live in a file
    script.write_text(PADDLE_SAVE)
    subprocess.run([sys.executable, str(script), str(prefix)], check=True, env=env, capture_output=True)
    assert prefix.with_suffix(suffix).is_file()
    result = ferry.convert(prefix.parent, tmp_path / "pkg", name="pdnet")
    assert result.parity is not None and result.parity.max_abs < 1e-4
    pkg = result.package
    assert pkg.signature.input_names == ["image"]  # Paddle's feed name is kept
    assert pkg.manifest.provenance.framework == "paddlepaddle"
    assert pkg.signature.inputs[0].shape[0] == "batch"
    out = ferry.create_predictor(ferry.Config(pkg)).predict(np.ones((3, 3, 16, 16), np.float32))
    assert next(iter(out.values())).shape == (3, 4)


def test_paddle_missing_params_is_a_clear_error(tmp_path):
    (tmp_path / "inference.json").write_text("{}")
    with pytest.raises(ConversionError, match=r"expected one Paddle program|needs"):
        ferry.convert(tmp_path, tmp_path / "out")


# --- scikit-learn ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def test_sklearn_pipeline_object(tmp_path, digits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = digits
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    result = ferry.convert(clf, tmp_path / "skl", example_inputs=x[:64])
    assert result.parity is not None
    pkg = result.package
    assert pkg.signature.output_names == ["label", "probabilities"]
    assert pkg.manifest.labels == [str(i) for i in range(10)]
    out = ferry.create_predictor(ferry.Config(pkg)).predict(x[:200])
    assert (out["label"] == clf.predict(x[:200])).all()
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(x[:200]), atol=1e-4)


def test_sklearn_column_transformer_takes_mixed_columns_as_one_input_each(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 120), "visits": rng.integers(0, 9, 120),
                          "city": rng.choice(["paris", "oslo", "rome"], 120)})  # fmt: skip
    y = (frame.age > 40) ^ (frame.city == "oslo")
    columns = ColumnTransformer([("num", StandardScaler(), ["age", "visits"]), ("cat", OneHotEncoder(), ["city"])])
    clf = make_pipeline(columns, LogisticRegression()).fit(frame, y)
    result = ferry.convert(clf, tmp_path / "mixed", example_inputs=frame[:16])
    assert result.parity.max_abs < 1e-4
    specs = {s.name: (s.dtype, tuple(s.shape)) for s in result.package.signature.inputs}
    assert specs == {
        "age": ("float32", ("batch", 1)),
        "visits": ("int64", ("batch", 1)),
        "city": ("string", ("batch", 1)),
    }
    feeds = {"age": frame[["age"]].to_numpy(np.float32), "visits": frame[["visits"]].to_numpy(),
             "city": frame[["city"]].to_numpy(object)}  # fmt: skip
    got = ferry.create_predictor(ferry.Config(result.package)).predict(feeds)
    np.testing.assert_allclose(got["probabilities"], clf.predict_proba(frame), atol=1e-5)


def test_sklearn_text_pipeline_runs_where_onnxruntimes_default_locale_is_missing(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from ferry.converters.sklearn import DEFAULT_LOCALE, string_locale

    texts = np.array(["Ferry carries models", "RAY scales out", "ferry to the browser", "ray on a cluster"], object)
    clf = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0])
    result = ferry.convert(clf, tmp_path / "text", example_inputs=texts)
    got = ferry.create_predictor(ferry.Config(result.package)).predict(texts)
    np.testing.assert_allclose(got["probabilities"], clf.predict_proba(texts), atol=1e-5)
    written = {
        a.s.decode() for n in onnx.load(result.package.model_path).graph.node for a in n.attribute if a.name == "locale"
    }
    assert written == ({string_locale()} if string_locale() else set())
    assert bool(result.notes) == (string_locale() is not None)
    assert string_locale() != DEFAULT_LOCALE


def test_sklearn_from_pickle_and_joblib(tmp_path, digits):
    import joblib
    from sklearn.ensemble import RandomForestRegressor

    x, y = digits
    reg = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(x, y.astype(float))
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(reg, f)
    joblib.dump(reg, tmp_path / "m.joblib")
    for source in ("m.pkl", "m.joblib"):
        result = ferry.convert(tmp_path / source, tmp_path / f"pkg-{source}", trust_pickle=True)
        got = ferry.create_predictor(ferry.Config(result.package)).predict(x[:50])
        np.testing.assert_allclose(next(iter(got.values())).ravel(), reg.predict(x[:50]), rtol=1e-4, atol=1e-4)


def test_sklearn_bad_pickle(tmp_path):
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ConversionError, match="could not unpickle"):
        ferry.convert(tmp_path / "bad.pkl", tmp_path / "out", trust_pickle=True)


class _Payload:
    """A pickle that writes a file when it is read: what an untrusted model file can do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    with open(path, "w") as f:
        f.write("ran")


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_pickles_are_refused_unless_trusted_and_their_code_never_runs(tmp_path, suffix):
    marker = tmp_path / "payload-ran"
    with open(tmp_path / f"evil{suffix}", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(ConversionError, match="--trust-pickle"):
        ferry.convert(tmp_path / f"evil{suffix}", tmp_path / "out")
    assert not marker.exists()
    from ferry.cli import main

    assert main(["convert", str(tmp_path / f"evil{suffix}"), "-o", str(tmp_path / "out")]) != 0
    assert not marker.exists()


def test_skops_files_convert_without_trust(tmp_path, digits):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    clf = LogisticRegression(max_iter=300).fit(x, y)
    sio.dump(clf, tmp_path / "clf.skops")
    result = ferry.convert(tmp_path / "clf.skops", tmp_path / "pkg")
    out = ferry.create_predictor(ferry.Config(result.package)).predict(x[:100])
    assert (out["label"] == clf.predict(x[:100])).all()


def test_sklearn_packages_batch_and_dims_can_be_renamed_from_the_cli(tmp_path, digits, capsys):
    from sklearn.ensemble import RandomForestClassifier

    from ferry.cli import main

    x, y = digits
    clf = RandomForestClassifier(n_estimators=4, max_depth=5, random_state=0).fit(x, y)
    with open(tmp_path / "rf.pkl", "wb") as f:
        pickle.dump(clf, f)
    result = ferry.convert(tmp_path / "rf.pkl", tmp_path / "rf", trust_pickle=True)
    sig = result.package.signature
    assert all(spec.shape[0] == "batch" for spec in [*sig.inputs, *sig.outputs]), sig
    assert "label: 8/8 equal" in str(result.parity)  # labels are compared as labels, not as floats
    args = ["convert", str(tmp_path / "rf.pkl"), "-o", str(tmp_path / "rf2"), "--trust-pickle"]
    assert main([*args, "--dim", "input:0=rows", "--overwrite"]) == 0, capsys.readouterr()
    assert ferry.load(tmp_path / "rf2").signature.inputs[0].shape[0] == "rows"


def test_inspect_counts_sklearn_parameters_and_flops(tmp_path, digits):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from ferry.stats import describe

    x, y = digits
    for est in (LogisticRegression(max_iter=200), RandomForestClassifier(n_estimators=3, random_state=0)):
        package = ferry.convert(est.fit(x, y), tmp_path / type(est).__name__, example_inputs=x[:16]).package
        info = describe(package)
        assert info["parameters"] > 0 and info["flops_estimate"] > 0, info


# --- ONNX and parity -------------------------------------------------------------------------------


def test_onnx_file_converts_with_parity_and_pruning(tmp_path):
    import onnx

    src = tmp_path / "two.onnx"
    onnx.save(make_mlp(extra_output=True), str(src))
    result = ferry.convert(src, tmp_path / "pkg", outputs=["y"], dim_names={"batch": "n"})
    assert result.parity is not None and result.parity.max_abs == 0.0
    assert result.package.signature.input_names == ["x"]
    assert result.package.signature.inputs[0].shape == ("n", 4)
    x = np.ones((2, 4), np.float32)
    got = ferry.create_predictor(ferry.Config(result.package)).predict(x)["y"]
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-5)


def test_onnx_opset_conversion(tmp_path, mlp_onnx):
    result = ferry.convert(mlp_onnx, tmp_path / "pkg", opset=15)
    assert result.package.opset == 15


def test_unknown_source_type(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConversionError, match="cannot tell the framework"):
        ferry.convert(tmp_path / "model.bin", tmp_path / "out")
    with pytest.raises(ConversionError, match="no such file"):
        ferry.convert(tmp_path / "nope.onnx", tmp_path / "out")


def test_compare_reports_and_fails_beyond_tolerance():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    report = compare("m", ["y"], [a], [a + 1e-6], atol=1e-5, rtol=0)
    assert report.diffs[0].max_abs == pytest.approx(1e-6, rel=0.1)
    with pytest.raises(ParityError, match=r"model 'm'.*y: max abs diff 0.1 > atol 1e-05"):
        compare("m", ["y"], [a], [a + 0.1], atol=1e-5, rtol=0)
    with pytest.raises(ParityError, match=r"source shape \[3\], package \[1, 3\]"):
        compare("m", ["y"], [a], [a[None]], atol=1, rtol=1)


@pytest.mark.parametrize(
    "want,got,passes",
    [
        ([1.0, np.nan], [1.0, np.nan], True),  # NaN where the source has NaN: the same answer
        ([1.0, np.inf], [1.0, np.inf], True),
        ([1.0, 2.0], [1.0, np.nan], False),  # an engine's NaN passed every tolerance before
        ([1.0, np.inf], [1.0, -np.inf], False),
        ([1.0, 2.0], [1.0, np.inf], False),
    ],
)
def test_compare_counts_nan_and_infinity_against_numbers_as_differences(want, got, passes):
    run = lambda: compare("m", ["y"], [np.array(want)], [np.array(got)], atol=float("inf"), rtol=0)  # noqa: E731
    if passes:
        assert run().max_abs == 0
    else:
        with pytest.raises(ParityError):
            compare("m", ["y"], [np.array(want)], [np.array(got)], atol=1e3, rtol=0)
        assert run().max_abs == float("inf")


def test_a_shipped_detector_that_needs_larger_made_up_inputs_converts(tmp_path):
    """PP-OCR's detector (as rapidocr-onnxruntime ships it) downsamples by 32: made-up 8x8 inputs failed
    the check, so the model could not be converted without example inputs."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    det = Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    result = ferry.convert(det, tmp_path / "det")
    assert result.parity is not None and result.parity.max_abs < 1e-4


def test_a_model_that_runs_on_no_made_up_inputs_says_so(tmp_path):
    from onnx import TensorProto, helper

    # Reshape to a fixed 7 elements: no made-up size of the free dimension fits
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [7])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], initializer=[shape])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ConversionError, match=r"at size 8: .*at size 64: .*at size 224: .*pass example_inputs"):
        ferry.convert(path, tmp_path / "odd")
