"""Compression: evaluation, int8 (ONNX Runtime and NNCF/OpenVINO), the accuracy guard, dynamic and
weight-only modes, and the CLI. Small models, real numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ferry
from conftest import interruptible
from ferry.cli import main as cli
from ferry.compress.evaluate import evaluate
from ferry.compress.quantize import quantize
from ferry.errors import ConfigError, InputError

DEMO = Path(ferry.__file__).parent / "demo"
DIGITS, TEST = DEMO / "digits", DEMO / "samples" / "test.npz"


def digits_accuracy() -> float:
    data = np.load(TEST)
    logits = ferry.create_predictor(ferry.Config(DIGITS)).predict({"image": data["image"]})["logits"]
    return float(np.mean(logits.argmax(1) == data["label"]))


def test_eval_top1_on_npz_matches_the_predictor():
    result = ferry.eval(DIGITS, TEST, "top1")
    assert result.count == 450
    assert result.value == pytest.approx(digits_accuracy())


def test_eval_on_an_image_folder_with_labels(tmp_path):
    images = sorted((DEMO / "samples").glob("*.png"))
    for p in images:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "labels.txt").write_text("".join(f"{p.name} {p.name.split('_')[0]}\n" for p in images))
    result = evaluate(DIGITS, tmp_path, "top5")
    assert result.count == len(images) and result.value >= 0.9
    (tmp_path / "labels.txt").write_text("missing.png 3\n")
    with pytest.raises(InputError, match="no image 'missing.png'"):
        evaluate(DIGITS, tmp_path, "top1")


def test_static_int8_on_onnxruntime_keeps_accuracy_and_shrinks(tmp_path):
    result = quantize(DIGITS, tmp_path / "q", TEST, backend="onnxruntime", eval_data=TEST)
    report = result.report
    assert report.drop is not None and report.drop * 100 <= 0.5
    # 38k parameters: int8 weights are 0.25x, and graph structure and scales add a few KiB on top.
    assert report.size_after <= 0.35 * report.size_before
    manifest = ferry.load(tmp_path / "q").manifest
    assert manifest.compression["format"] in ("qdq", "qoperator")
    assert manifest.compression["report"]["accuracy_after"] == pytest.approx(report.accuracy_after)
    assert manifest.tuning["fp32"]["fastest"]["1"] == "onnxruntime"
    ops = {n.op_type for n in ferry.load(tmp_path / "q").graph_proto().graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear"}


def test_static_int8_for_openvino_through_nncf(tmp_path):
    pytest.importorskip("nncf")
    result = quantize(DIGITS, tmp_path / "q", TEST, backend="openvino", eval_data=TEST)
    assert result.format == "qdq" and result.backend == "openvino"
    assert result.report.drop * 100 <= 0.5
    # NNCF leaves float weights behind Quantize/Dequantize pairs; ferry stores them as int8.
    assert result.report.size_after <= 0.35 * result.report.size_before
    weights = ferry.load(tmp_path / "q").full_model().graph.initializer
    assert any(t.data_type == TensorProto.INT8 for t in weights)


def outlier_mlp(tmp_path: Path) -> ferry.ModelPackage:
    """A layer whose activations hold one huge unit: per-tensor int8 wipes out the small ones."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w1[:, 0] *= 2000.0
    w2 = rng.standard_normal((32, 10)).astype(np.float32)
    w2[0] *= 1e-4
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="layer1"),
        helper.make_node("Relu", ["h"], ["r"], name="act1"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="layer2"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    pkg = ferry.save(model, tmp_path / "mlp")
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((256, 16)).astype(np.float32))
    return pkg


def test_accuracy_guard_finds_the_layer_and_keeps_it_in_float(tmp_path):
    pkg = outlier_mlp(tmp_path)
    data = tmp_path / "data.npz"
    result = quantize(pkg, tmp_path / "q", data, backend="onnxruntime", fmt="qdq", eval_data=data,
                      metric="agreement", max_drop=1.0)  # fmt: skip
    first_drop = result.attempts[0][1]
    assert first_drop * 100 > 1.0, "the test model should break under plain int8"
    assert result.sensitivity[0].node == "layer2"  # where the error is added
    assert "layer2" in result.excluded
    assert result.report.drop * 100 <= 1.0
    assert "added here" in str(result)


def test_agreement_metric_needs_a_reference_and_takes_itself_as_one(tmp_path):
    pkg = outlier_mlp(tmp_path)
    with pytest.raises(ConfigError, match="reference"):
        evaluate(pkg, tmp_path / "data.npz", "agreement")
    assert evaluate(pkg, tmp_path / "data.npz", "agreement", reference=pkg).value == 1.0
    with pytest.raises(InputError, match="needs labels"):
        evaluate(pkg, tmp_path / "data.npz", "top1")


def matmul_model(tmp_path: Path) -> ferry.ModelPackage:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32) * 0.05, f"w{i}")
             for i in range(3)]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="mm0"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("MatMul", ["b", "w1"], ["c"], name="mm1"),
        helper.make_node("MatMul", ["c", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 256])], inits,
    )  # fmt: skip
    pkg = ferry.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "mm"
    )
    np.savez(tmp_path / "mm.npz", x=rng.standard_normal((32, 8, 256)).astype(np.float32))
    return pkg


@pytest.mark.parametrize(
    "mode, bits, op, cosine",
    [("dynamic", 8, "MatMulInteger", 0.99), ("weight-only", 4, "MatMulNBits", 0.98)],  # 4 bits: 16 levels per block
)
def test_dynamic_and_weight_only_modes(tmp_path, mode, bits, op, cosine):
    pkg = matmul_model(tmp_path)
    result = quantize(pkg, tmp_path / "q", mode=mode, bits=bits, eval_data=tmp_path / "mm.npz", metric="cosine",
                      backend="onnxruntime")  # fmt: skip
    ops = {n.op_type for n in ferry.load(tmp_path / "q").graph_proto().graph.node}
    assert op in ops
    assert result.report.accuracy_after >= cosine  # against the fp32 package
    assert result.report.size_after < 0.5 * result.report.size_before


def test_quantize_cli_reports_and_refuses_bad_requests(tmp_path, capsys):
    assert cli(["quantize", str(DIGITS), "-o", str(tmp_path / "q"), "--calib", str(TEST), "--backend", "onnxruntime",
                "--eval", str(TEST), "--max-drop", "0.5"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "size:" in out and "latency, batch 1:" in out and "top1:" in out
    assert cli(["quantize", str(DIGITS), "-o", str(tmp_path / "r")]) == 1
    assert "needs calibration data" in capsys.readouterr().err
    assert cli(["quantize", str(DIGITS), "-o", str(tmp_path / "q"), "--calib", str(TEST)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli(["eval", str(DIGITS), "--data", str(TEST)]) == 0
    assert "top1 0.98" in capsys.readouterr().out


def digits_train(tmp_path: Path) -> Path:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    x_train, _, _, _ = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    np.savez(tmp_path / "train.npz", image=x_train[:512])  # the split the demo model was trained on
    return tmp_path / "train.npz"


def test_structured_pruning_removes_channels_and_refits(tmp_path):
    from ferry.compress.prune import prune

    result = prune(DIGITS, tmp_path / "p", "structured", 0.5, eval_data=TEST, calib_data=digits_train(tmp_path))
    graph = ferry.load(tmp_path / "p").full_model().graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    conv_weights = [shapes[n.input[1]] for n in graph.node if n.op_type == "Conv"]
    assert conv_weights[0][0] == 8 and conv_weights[1][:2] == [16, 8]  # 16 -> 8 filters, and 8 inputs downstream
    assert (result.accuracy_before - result.accuracy_after) * 100 <= 1.0  # refitting wins the accuracy back
    assert result.size_after < 0.4 * result.size_before


def test_magnitude_pruning_is_reported_as_a_compressed_size_win(tmp_path):
    from ferry.compress.prune import prune

    result = prune(DIGITS, tmp_path / "m", "magnitude", 0.5)
    weights = [numpy_helper.to_array(t) for t in ferry.load(tmp_path / "m").full_model().graph.initializer]
    big = [w for w in weights if w.ndim >= 2]
    assert all(np.mean(w == 0) >= 0.49 for w in big)
    assert result.size_after >= 0.95 * result.size_before  # dense: no smaller
    assert result.gzip_after < 0.7 * result.gzip_before
    assert "sparse kernel" in str(result)


def test_pruning_guard_lowers_the_ratio(tmp_path):
    from ferry.compress.prune import prune

    result = prune(DIGITS, tmp_path / "g", "structured", 0.75, eval_data=TEST, max_drop=1.0)  # no refit data
    assert result.attempts[0][1] * 100 > 1.0 and result.ratio < 0.75
    assert (result.accuracy_before - result.accuracy_after) * 100 <= 1.0


@pytest.mark.parametrize("to", ["fp16", "bf16"])
def test_convert_precision(tmp_path, to, capsys):
    assert cli(["convert-precision", str(DIGITS), "-o", str(tmp_path / to), "--to", to, "--eval", str(TEST),
                "--metric", "top1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "max abs diff" in out and "top1: 0.98" in out
    pkg = ferry.load(tmp_path / to)
    types = {t.data_type for t in pkg.full_model().graph.initializer}
    if to == "fp16":
        assert TensorProto.FLOAT16 in types
    else:  # fp32 weights, run at bf16 on OpenVINO by default
        config = ferry.Config(pkg.root)
        assert config.precision == "bf16"
        assert pkg.manifest.tuning["bf16"]["fastest"]["1"] == "openvino"


def test_layers_kept_in_float_can_still_store_int8_weights(tmp_path):
    import onnxruntime as ort

    from ferry.compress.weights import int8_weights_for

    pkg = matmul_model(tmp_path)
    model = pkg.full_model()
    assert int8_weights_for(model, ["mm0", "mm2"]) == 2
    weights = {t.name: t for t in model.graph.initializer}
    assert weights["w0_wq"].data_type == TensorProto.INT8 and "w0" not in weights and "w1" in weights
    x = np.load(tmp_path / "mm.npz")["x"][:4]
    want = ort.InferenceSession(pkg.full_model().SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    # The guard's outlier model cannot afford int8 weights in its float layer: the record says it tried without.
    outlier = outlier_mlp(tmp_path)
    quantize(outlier, tmp_path / "q", tmp_path / "data.npz", backend="onnxruntime", fmt="qdq",
             eval_data=tmp_path / "data.npz", metric="agreement", max_drop=1.0)  # fmt: skip
    assert ferry.load(tmp_path / "q").manifest.compression["int8_weights_when_float"] is False


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_calibration_methods_from_a_python_data_reader(tmp_path, method):
    images = np.load(TEST)["image"]

    def reader():  # a generator of feed dicts, as a PaddleSlim batch generator gives them
        for start in range(0, 128, 16):
            yield {"image": images[start : start + 16]}

    result = quantize(DIGITS, tmp_path / "q", reader, backend="onnxruntime", fmt="qdq", method=method, eval_data=TEST)
    assert result.report.drop * 100 <= 1.0
    assert ferry.load(tmp_path / "q").manifest.compression["method"] == method
    with pytest.raises(InputError, match="has no input 'image'"):
        quantize(DIGITS, tmp_path / "r", [{"wrong": images[:4]}], backend="onnxruntime")


def test_tensorrt_target_writes_symmetric_qdq(tmp_path):
    result = quantize(DIGITS, tmp_path / "t", TEST, backend="tensorrt", eval_data=TEST)
    assert result.format == "qdq-symmetric" and result.report.drop * 100 <= 0.5
    pkg = ferry.load(tmp_path / "t")
    assert pkg.manifest.compression["backend"] == "tensorrt"
    assert pkg.manifest.compression["runs_on"] == "onnxruntime"
    weights = {t.name: numpy_helper.to_array(t) for t in pkg.full_model().graph.initializer}
    q_nodes = [n for n in pkg.graph_proto().graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes and all(weights[n.input[2]].dtype == np.int8 and not weights[n.input[2]].any() for n in q_nodes)


def test_inspect_shows_what_compression_did(tmp_path, capsys):
    quantize(DIGITS, tmp_path / "q", TEST, backend="onnxruntime", fmt="qoperator")
    capsys.readouterr()
    assert cli(["inspect", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert 'compression: {"mode": "static"' in out and '"format": "qoperator"' in out


# --- derived packages keep what they were; outputs appear whole or not at all -----------------------


def test_every_derivation_carries_the_manifest_forward_and_records_itself(tmp_path, capsys):
    from ferry.compress.precision import convert_precision
    from ferry.compress.prune import prune
    from ferry.optimize import optimize_package

    bf16 = convert_precision(DIGITS, tmp_path / "bf16", "bf16").package
    optimize_package(bf16, tmp_path / "bf16-opt")
    bf16_opt = ferry.load(tmp_path / "bf16-opt")
    assert bf16_opt.manifest.compression.get("run_precision") == "bf16"  # optimize lost it before
    assert ferry.Config(bf16_opt.root).precision == "bf16"

    pruned = prune(DIGITS, tmp_path / "pruned", "magnitude", 0.3).package
    optimize_package(pruned, tmp_path / "opt")
    quantized = quantize(tmp_path / "opt", tmp_path / "q", TEST, backend="onnxruntime").package
    source = ferry.load(DIGITS).manifest
    for pkg in (bf16_opt, pruned, quantized):
        m = pkg.manifest
        assert (m.name, m.labels, m.preprocessing) == (source.name, source.labels, source.preprocessing)
        assert m.provenance.framework == source.provenance.framework  # the origin is not "onnx" now
        assert m.provenance.converter == source.provenance.converter
    steps = [s["step"] for s in quantized.manifest.provenance.derived_from]
    assert steps == ["prune", "optimize", "quantize"]
    assert cli(["inspect", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "then prune" in out and "then quantize" in out


def test_an_interrupted_quantize_leaves_nothing_at_the_output(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "q"
    cmd = [sys.executable, "-m", "ferry", "quantize", str(DIGITS), "-o", str(out), "--calib", str(TEST),
           "--eval", str(TEST), "--max-drop", "0"]  # fmt: skip  # the guard's retries make it run for a while
    proc = interruptible(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".q.candidates-") and any(p.iterdir()) for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "quantize ended before it wrote a candidate"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the candidates went with it


# --- reports say true things ------------------------------------------------------------------------


@pytest.mark.parametrize("before, after, said", [(10.0, 5.0, "2.00x faster"), (5.0, 71.4, "14.28x slower")])
def test_speed_is_faster_or_slower_never_a_fraction_faster(before, after, said):
    from ferry.compress.report import speed

    assert speed(before, after) == said


def test_weight_only_on_a_cnn_says_why_the_file_did_not_shrink(tmp_path):
    result = quantize(DIGITS, tmp_path / "w4", mode="weight-only", bits=4)
    text = str(result.report)
    assert "weight-only int4 packs the weights of MatMul layers (0 in this model)" in text
    assert "int8 is not faster" not in text


def test_the_guard_table_measures_or_says_it_could_not(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        result = quantize(DIGITS, tmp_path / "q", TEST, backend="onnxruntime", fmt="qdq", eval_data=TEST,
                          metric="cosine", max_drop=0)  # fmt: skip  # any drop at all sets the guard off
    text = caplog.text
    assert "per-layer error, worst first" in text and "> 0 allowed" in text
    assert "drop 0.00 points" not in text
    rows = result.sensitivity
    assert rows and all(r.added is None or r.added >= 0.0 for r in rows)  # never "about -1.0"
    measured = [r for r in rows if r.error is not None]
    assert measured and all(r.error > 0.0 for r in measured)  # a fused-away output is not "error 0"
    assert rows[0].error is not None  # the worst-first list starts with a measured layer
    order = [r.added for r in measured]
    assert order == sorted(order, reverse=True)
    assert text.count("Please consider") <= 1  # ONNX Runtime's advice, once per run


def test_calibration_data_with_the_wrong_input_name_says_what_the_file_holds(tmp_path):
    np.savez(tmp_path / "calib.npz", features=np.load(TEST)["image"])
    with pytest.raises(InputError, match=r"needs input\(s\) \['image'\]; the file holds \['features'\]"):
        quantize(DIGITS, tmp_path / "q", tmp_path / "calib.npz")
