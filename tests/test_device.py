"""Device engines: ncnn and MNN as backends (converted once, recorded and checksummed in the package), and
`ferry export lite --target ncnn|mnn|ort` (written, then run from the files alone)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ferry
from conftest import cancelling_package, tiny_bert_package, torch_cnn_package, wide_convolutions_package
from ferry.cli import main
from ferry.errors import ChecksumError, ConfigError, ConversionError, UnsupportedModelError
from ferry.exporters.targets import export_target, takes

ENGINES = ["ncnn", "mnn"]


@pytest.fixture(scope="module")
def cnn_root(tmp_path_factory):
    return torch_cnn_package(tmp_path_factory.mktemp("cnn") / "cnn").root


@pytest.fixture
def cnn(cnn_root, tmp_path):
    """A fresh copy per test: the backends write their files into the package."""
    import shutil

    return ferry.load(shutil.copytree(cnn_root, tmp_path / "cnn"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert_package(tmp_path_factory.mktemp("bert") / "bert")


def predictor(package, backend, threads=2, profile=False):
    config = ferry.Config(package.root)
    config.set_backend(backend)
    config.set_cpu_threads(threads)
    if profile:
        config.enable_profile()
    return ferry.create_predictor(config)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", [1, 5])
def test_engine_backends_match_onnxruntime_at_any_batch(cnn, engine, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    want = predictor(cnn, "onnxruntime").predict(x)["logits"]
    got = predictor(cnn, engine).predict(x)["logits"]
    assert got.shape == (batch, 5)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_converted_files_are_recorded_checksummed_and_reused(cnn, engine):
    predictor(cnn, engine)
    package = ferry.load(cnn.root)
    files = [f for f in package.manifest.files if f.startswith(f"engines/{engine}/")]
    assert files and package.manifest.engines[engine]["files"]
    first = {f: (cnn.root / f).stat().st_mtime_ns for f in files}
    predictor(cnn, engine)  # a second predictor loads what is recorded, converts nothing
    assert {f: (cnn.root / f).stat().st_mtime_ns for f in files} == first
    with open(cnn.root / files[-1], "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError, match=files[-1]):
        ferry.load(cnn.root)


def test_a_package_that_cannot_be_written_converts_aside(cnn, tmp_path, caplog):
    """A package on a read-only mount (root writes through file modes, not through this)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(cnn.root), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)
        out = predictor(ferry.load(mount), "mnn").predict(np.zeros((1, 3, 32, 32), np.float32))
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert out["logits"].shape == (1, 5)
    assert "not writable" in caplog.text
    assert "engines" not in ferry.load(cnn.root).manifest.to_dict()


def test_mnn_profiles_per_op_and_ncnn_says_it_cannot(cnn):
    p = predictor(cnn, "mnn", profile=True)
    p.predict(np.zeros((2, 3, 32, 32), np.float32))
    ops = {row.op_type for row in p.profile()}
    assert "Convolution" in ops
    q = predictor(cnn, "ncnn", profile=True)
    q.predict(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ConfigError, match="no per-layer timing"):
        q.profile()


@pytest.mark.parametrize("engine,message", [("ncnn", "ncnn has no layer for 4 op(s) of 'bert': Tensor.to at layer")])
def test_a_model_the_engine_cannot_take_says_why(bert, engine, message, tmp_path):
    import shutil

    copy = ferry.load(shutil.copytree(bert.root, tmp_path / "bert"))
    feeds = {"input_ids": np.ones((2, 16), np.int64), "attention_mask": np.ones((2, 16), np.int64)}
    with pytest.raises(UnsupportedModelError) as info:
        # MNN converts when the predictor is made; ncnn at the first call, at its shapes (a named sequence)
        predictor(copy, engine).predict(feeds)
    assert message in str(info.value)


def test_an_engine_that_computes_a_little_differently_is_served_with_a_warning(bert, tmp_path, caplog):
    """MNN's masked attention on the tiny BERT: 0.005 off on the made-up check (within REFUSE, beyond fp32's
    PARITY). Served, with a warning that says so; the export says it too."""
    import shutil

    copy = ferry.load(shutil.copytree(bert.root, tmp_path / "bert"))
    predictor(copy, "mnn")
    assert "mnn runs 'bert'" in caplog.text and "beyond fp32's 1e-4 + 1e-3 x |x|" in caplog.text
    result = export_target(copy, tmp_path / "out", "mnn")
    assert not result.exact and "beyond fp32's bound" in result.summary()


def test_ncnn_converts_at_the_first_calls_shapes_and_again_for_others(tmp_path, caplog):
    import rapidocr_onnxruntime

    source = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    package = ferry.convert(source, tmp_path / "cls").package  # input [batch, 3, height, width] (named)
    x = np.random.default_rng(0).standard_normal((3, 3, 48, 192)).astype(np.float32)
    want = predictor(package, "onnxruntime").predict(x)
    p = predictor(package, "ncnn")
    got = p.predict(x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)
    (image,), (out,) = package.signature.input_names, package.signature.output_names
    assert ferry.load(package.root).manifest.engines["ncnn"]["shapes"] == {image: [1, 3, 48, 192]}
    narrow = p.predict(x[:, :, :, :96])  # other shapes: converted again (a bench at made-up sizes must not pin it)
    np.testing.assert_allclose(narrow[out], predictor(package, "onnxruntime").predict(x[:, :, :, :96])[out], atol=1e-4)
    assert f"converting {package.name!r} again for the shapes" in caplog.text
    assert ferry.load(package.root).manifest.engines["ncnn"]["shapes"] == {image: [1, 3, 48, 96]}
    again = predictor(package, "ncnn")  # a new predictor loads the recorded conversion
    np.testing.assert_allclose(again.predict(x[:1, :, :, :96])[out], narrow[out][:1], atol=1e-4)


@pytest.mark.parametrize(
    "target,files",
    [("ncnn", {"model.ncnn.param", "model.ncnn.bin"}), ("mnn", {"model.mnn"}),
     ("ort", {"model.ort", "required_operators.config"})],
)  # fmt: skip
def test_export_targets_write_the_engines_files_and_check_them(cnn, tmp_path, capsys, target, files):
    out = tmp_path / target
    assert main(["export", "lite", str(cnn.root), "-o", str(out), "--target", target]) == 0
    printed = capsys.readouterr().out
    assert files | {"engine.json"} == {p.name for p in out.iterdir()}
    assert "run from the written files" in printed and "max abs diff" in printed
    record = json.loads((out / "engine.json").read_text())
    assert record["engine"] == target and record["signature"]["inputs"][0]["name"] == "image"
    if target == "ort":
        assert "ai.onnx:" in printed and "operators for a reduced ORT build" in printed


def test_written_ncnn_and_ort_files_run_alone_in_their_bindings(cnn, tmp_path):
    import ncnn
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = predictor(cnn, "onnxruntime").predict(x)["logits"]
    export_target(cnn, tmp_path / "n", "ncnn")
    net = ncnn.Net()
    net.opt.use_fp16_storage = False
    net.load_param(str(tmp_path / "n" / "model.ncnn.param"))
    net.load_model(str(tmp_path / "n" / "model.ncnn.bin"))
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x[0]))
    np.testing.assert_allclose(np.array(ex.extract("out0")[1]).reshape(1, 5), want, atol=1e-4)
    export_target(cnn, tmp_path / "o", "ort")
    session = ort.InferenceSession(str(tmp_path / "o" / "model.ort"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"image": x})[0], want, atol=1e-5)


def test_fp16_and_int8_weights_shrink_the_mnn_file(cnn, tmp_path):
    sizes = {}
    for name, options in {"fp32": {}, "fp16": {"fp16": True}, "int8": {"int8": True}}.items():
        result = export_target(cnn, tmp_path / name, "mnn", **options)
        sizes[name] = result.sizes["model.mnn"]
        assert result.parity.max_abs < 1e-2  # reported, not held to fp32's 1e-4
    assert sizes["fp16"] < 0.7 * sizes["fp32"] and sizes["int8"] < 0.5 * sizes["fp32"]


def test_outputs_of_another_shape_are_a_parity_error_not_a_crash(cnn):
    from ferry.errors import ParityError
    from ferry.exporters.engine_check import judge

    with pytest.raises(ParityError, match=r"source shape \[1, 5\], package \[1, 4\]"):
        judge(cnn, {"logits": np.zeros((1, 5), np.float32)}, {"logits": np.zeros((1, 4), np.float32)}, 1.0, 1.0)


def test_the_mnn_export_is_checked_without_winograd_and_says_how_a_device_matches_it(tmp_path):
    package = wide_convolutions_package(tmp_path / "wide")
    result = export_target(package, tmp_path / "out", "mnn")
    assert result.exact and result.parity.max_abs < 1e-5  # with MNN's default Winograd: 8e-4 measured
    assert "set the WINOGRAD_MEMORY_LEVEL hint to 0" in result.summary()
    x = np.random.default_rng(0).standard_normal((1, 16, 56, 56)).astype(np.float32)
    want = predictor(package, "onnxruntime").predict(x)["y"]
    served = predictor(package, "mnn").predict(x)["y"]  # the backend runs MNN as a raw MNN user gets it
    assert 1e-5 < np.abs(served - want).max() < 1e-2


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """Calibration images for the CNN, as `ferry quantize` takes them (.npz named like the input)."""
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, image=np.random.default_rng(5).standard_normal((24, 3, 32, 32)).astype(np.float32))
    return path


def run_written(target, folder, x):
    """The written files alone in the engine's own binding, one sample at a time."""
    outs = []
    if target == "ncnn":
        import ncnn

        net = ncnn.Net()
        assert net.load_param(str(folder / "model.ncnn.param")) == 0
        assert net.load_model(str(folder / "model.ncnn.bin")) == 0
        for sample in x:
            ex = net.create_extractor()
            ex.input("in0", ncnn.Mat(np.ascontiguousarray(sample)))
            outs.append(np.array(ex.extract("out0")[1]).reshape(-1))
    else:
        import MNN

        module = MNN.nn.load_module_from_file(str(folder / "model.mnn"), ["image"], ["logits"])
        for sample in x:
            value = MNN.expr.const(sample[None], list(sample[None].shape), MNN.expr.NCHW)
            outs.append(np.array(module.forward([value])[0].read()).reshape(-1))
    return np.stack(outs)


@pytest.mark.parametrize("target", ENGINES)
def test_int8_from_calibration_data_runs_int8_layers_close_to_float(cnn, calib, tmp_path, capsys, target):
    out = tmp_path / target
    args = ["export", "lite", str(cnn.root), "-o", str(out), "--target", target, "--int8", "--calib", str(calib)]
    assert main([*args, "--calib-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "calibration on 16 samples" in printed and "on 16 calibration samples" in printed
    float_size = export_target(cnn, tmp_path / "fp32", target).sizes
    record = json.loads((out / "engine.json").read_text())
    assert record["options"]["int8"]["samples"] == 16
    model_file = record["files"][-1]  # the weights: model.ncnn.bin, model.mnn
    assert (out / model_file).stat().st_size < 0.8 * float_size[model_file]
    if target == "ncnn":  # ncnn's int8 layers: int8_scale_term on each convolution and the linear layer
        lines = (out / "model.ncnn.param").read_text().splitlines()
        assert sum(" 8=2" in line for line in lines if line.startswith(("Convolution", "InnerProduct"))) == 3
    x = np.random.default_rng(6).standard_normal((12, 3, 32, 32)).astype(np.float32)  # not the calibration set
    want = predictor(cnn, "onnxruntime").predict(x)["logits"]
    got, fp32 = run_written(target, out, x), run_written(target, tmp_path / "fp32", x)
    np.testing.assert_allclose(fp32, want, atol=1e-4)
    err = np.abs(got - want).max()
    assert 1e-5 < err < 0.1 * np.abs(want).max()  # int8 arithmetic: not float's, and close to it
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_the_accuracy_guard_scores_the_written_files_and_refuses_a_larger_drop(cnn, calib, tmp_path):
    from ferry.compress.evaluate import evaluate

    x = np.random.default_rng(7).standard_normal((20, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", image=x, label=np.arange(20) % 5)
    result = export_target(cnn, tmp_path / "out", "ncnn", int8=True, calib=calib, eval_data=tmp_path / "eval.npz",
                           max_drop=100)  # fmt: skip
    accuracy = result.accuracy
    assert (accuracy.metric, accuracy.count) == ("top1", 20)
    assert accuracy.package == evaluate(cnn, tmp_path / "eval.npz", "top1").value
    assert "accuracy, top1 on 20 samples: package" in result.summary()
    with pytest.raises(ConversionError, match="accuracy drops more than 0 points: cosine on 20 samples"):
        export_target(cnn, tmp_path / "o2", "mnn", int8=True, calib=calib, eval_data=tmp_path / "eval.npz",
                      metric="cosine", max_drop=0)  # fmt: skip
    with pytest.raises(ConversionError, match="needs evaluation data"):
        export_target(cnn, tmp_path / "o3", "mnn", max_drop=1)
    with pytest.raises(ConversionError, match="'top1' needs labels"):  # said before converting
        export_target(cnn, tmp_path / "o3", "mnn", eval_data=calib, metric="top1")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    args = ["export", "lite", str(cnn.root), "-o", str(tmp_path / "f.flite"), "--int8", "--calib", str(calib)]
    assert main(args) == 2  # a usage error: the numpy target quantizes weights only


@pytest.mark.parametrize("target", ENGINES)
def test_int8_far_from_the_package_is_refused_unless_judged_by_accuracy(tmp_path, target):
    package = cancelling_package(tmp_path / "cancel")
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    with pytest.raises(ConversionError, match=r"int8 computes something else than the package: cosine similarity 0\."):
        export_target(package, tmp_path / "out", target, int8=True, calib=tmp_path / "c.npz")
    assert not (tmp_path / "out").exists()
    result = export_target(package, tmp_path / "out", target, int8=True, calib=tmp_path / "c.npz",
                           eval_data=tmp_path / "c.npz", metric="cosine", max_drop=100)  # fmt: skip
    assert result.cosine < 0.9 and result.accuracy.export < 0.9  # written: the user judged by accuracy


def test_int8_ncnn_converts_at_the_calibration_shapes_and_says_when_they_differ(tmp_path):
    import rapidocr_onnxruntime

    source = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    package = ferry.convert(source, tmp_path / "cls").package  # input [batch, 3, height, width] (named)
    name = package.signature.input_names[0]
    np.savez(tmp_path / "c.npz", **{name: np.random.default_rng(1).uniform(-1, 1, (8, 3, 48, 96)).astype(np.float32)})
    result = export_target(package, tmp_path / "out", "ncnn", int8=True, calib=tmp_path / "c.npz")
    assert result.model.shapes == {name: [1, 3, 48, 96]} and result.model.options["int8"]["layers"] > 10
    assert " 8=101" in (tmp_path / "out" / "model.ncnn.param").read_text()  # int8 handed from layer to layer
    assert result.parity.max_abs < 0.25  # two class probabilities, on noise: 0.13 measured
    with pytest.raises(ConversionError, match=r"samples of .* are \[3, 48, 96\], ncnn converted the model at"):
        export_target(
            package, tmp_path / "o2", "ncnn", int8=True, calib=tmp_path / "c.npz", shapes={name: [1, 3, 48, 192]}
        )
    with pytest.raises(ConversionError, match="calibration data is for int8: add --int8"):
        export_target(package, tmp_path / "o3", "mnn", calib=tmp_path / "c.npz")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


@pytest.mark.parametrize(
    "target,options,message",
    [
        ("ncnn", {}, "Targets that take 'bert': mnn, ort, numpy"),
        ("ncnn", {"shapes": {"input_ids": [1, 16], "attention_mask": [1, 16]}}, "torch.where at layer"),
        ("ncnn", {"int8": True}, "needs calibration data: --calib"),
        ("ort", {"fp16": True}, "keeps the package's precision"),
        ("ncnn", {"shapes": {"ids": [1, 4]}}, "the model's inputs are ['input_ids', 'attention_mask']"),
    ],
)
def test_export_errors_name_the_op_and_the_targets_that_work(bert, tmp_path, target, options, message):
    with pytest.raises(ConversionError) as info:
        export_target(bert, tmp_path / "out", target, **options)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind


def test_takes_tells_which_targets_convert(cnn, bert):
    assert [t for t in ("ncnn", "mnn", "ort", "numpy") if takes(cnn, t)] == ["ncnn", "mnn", "ort", "numpy"]
    assert [t for t in ("ncnn", "mnn", "ort", "numpy") if takes(bert, t)] == ["mnn", "ort", "numpy"]


def test_bench_tune_measures_the_device_engines_and_auto_follows(cnn, capsys):
    args = ["bench", str(cnn.root), "--batch", "1", "--threads", "2", "--runs", "5", "--warmup", "1"]
    assert main([*args, "--min-seconds", "0", "--tune"]) == 0
    record = ferry.load(cnn.root).manifest.tuning["fp32"]
    assert {m["backend"] for m in record["measured"]} == {"onnxruntime", "openvino", "ncnn", "mnn"}
    config = ferry.Config(cnn.root)
    assert record["fastest"]["1"] in ferry.create_predictor(config).backend


def test_an_engine_that_crashes_on_its_converted_model_takes_only_a_child_process(tmp_path):
    """ncnn 1.0.20261020 segfaults on what pnnx makes of Keras' Rescaling + Normalization layers."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Normalization(mean=[0.4] * 3, variance=[0.2] * 3)(keras.layers.Rescaling(1 / 255)(inp))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="scores")(keras.layers.GlobalAveragePooling2D()(x)))
    package = ferry.convert(model, tmp_path / "k", example_inputs=np.zeros((2, 16, 16, 3), np.float32)).package
    with pytest.raises(UnsupportedModelError, match=r"ncnn crashed \(SIGSEGV\) running"):
        predictor(package, "ncnn")
    assert "ncnn" not in ferry.load(package.root).manifest.engines  # nothing recorded
    assert predictor(package, "mnn").predict(np.zeros((1, 16, 16, 3), np.float32))["scores"].shape == (1, 3)


def test_bench_leaves_out_an_engine_that_cannot_take_the_model_and_says_why(bert, tmp_path):
    import shutil

    from ferry.bench import measure_each

    copy = ferry.load(shutil.copytree(bert.root, tmp_path / "bert"))
    results, skipped = measure_each(copy, ["onnxruntime", "ncnn"], [1], [1], runs=2, warmup=1)
    assert {m.backend for m in results} == {"onnxruntime"}
    assert set(skipped) == {"ncnn"} and "torch.where at layer" in skipped["ncnn"]


@pytest.mark.parametrize("named,chosen", [(True, "onnxruntime"), (False, "ncnn")])
def test_auto_is_not_tuned_to_ncnn_for_a_model_with_named_dimensions(cnn, named, chosen, tmp_path):
    """ncnn converts at fixed shapes: for a page of any size or a crop of any width, every new size would
    convert again (seconds). `--tune` keeps measuring it, and does not choose it there."""
    import rapidocr_onnxruntime

    from ferry.bench import Measurement, tuning_record

    if named:
        source = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        package = ferry.convert(source, tmp_path / "cls").package  # [batch, 3, height, width]
    else:
        package = cnn  # [batch, 3, 32, 32]
    measured = [
        Measurement("ncnn", 1, 2, 5, 1.0, 1.0, 1.0, 1.0),
        Measurement("onnxruntime", 1, 2, 5, 2.0, 2.0, 2.0, 2.0),
    ]
    record = tuning_record(measured, "fp32", package=package)
    assert record["fastest"] == {"1": chosen} and len(record["measured"]) == 2
