"""The lite engine: ONNX node-case coverage, numpy-only imports, the memory plan, the compact format,
`ferry export lite` (one file and a bundle that runs in a fresh venv with numpy alone) and the backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ferry
from ferry.cli import main as cli
from ferry.exporters.onnx_to_lite import from_onnx
from ferry.lite import Engine, FormatError, LiteInputError, UnsupportedOpError, load, save
from ferry.lite.planner import Plan
from lite_cases import all_cases, run_case

ROOT = Path(__file__).resolve().parent.parent


def small_cnn(tmp_path: Path) -> ferry.ModelPackage:
    """Conv+BN+ReLU, a depthwise conv, a residual Add, pooling and a Gemm head: the CNN paths of the engine."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d1"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Add", ["d1", "r1"], ["s1"]),
        helper.make_node("MaxPool", ["s1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    var = numpy_helper.from_array((rng.random(8) + 0.5).astype(np.float32), "var")
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("g", 8), init("beta", 8), init("mean", 8), var,
             init("wd", 8, 1, 3, 3), init("wf", 10, 8), init("bf", 10)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ferry.save(model, tmp_path / "cnn", name="cnn")


def ort_outputs(pkg: ferry.ModelPackage, x: np.ndarray) -> np.ndarray:
    config = ferry.Config(pkg.root)
    config.set_backend("onnxruntime")
    return ferry.create_predictor(config).predict({"x": x})["y"]


# --- coverage --------------------------------------------------------------------------------------------


def test_node_cases_match_the_list_in_docs():
    """Every case passes except those listed in docs/lite.md, each with its reason; and at least 1700 pass."""
    text = (ROOT / "docs" / "lite.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| (test_\w+) \|", text, flags=re.M))
    results = [run_case(c) for c in all_cases()]
    failed = {r.name: r.reason for r in results if not r.ok}
    newly_failing = {n: failed[n] for n in sorted(set(failed) - listed)}
    now_passing = sorted(listed - set(failed))
    assert not newly_failing, f"cases failing that docs/lite.md does not list: {newly_failing}"
    assert not now_passing, f"listed as failing but pass now (run scripts/lite_node_report.py): {now_passing}"
    assert len(results) - len(failed) >= 1700


def test_import_pulls_in_numpy_and_the_standard_library_only():
    code = (
        "import sys; import ferry.lite; "
        "mods = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(m for m in mods if m not in sys.stdlib_module_names and not m.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["ferry", "numpy"], out


def test_unsupported_ops_are_all_listed_at_load_time():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("NoSuchOp", ["a"], ["b"], domain="my.domain", name="first"),
        helper.make_node("AlsoMissing", ["b"], ["y"], domain="my.domain", name="second"),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    with pytest.raises(UnsupportedOpError, match=r"2 node\(s\).*NoSuchOp.*'first'.*AlsoMissing.*'second'"):
        Engine(from_onnx(model))


def test_inputs_are_checked_by_name_dtype_and_shape(tmp_path):
    engine = Engine(from_onnx(small_cnn(tmp_path).full_model()))
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(LiteInputError, match="missing"):
        engine.run({})
    with pytest.raises(LiteInputError, match="expected dtype float32, got float64"):
        engine.run({"x": x.astype(np.float64)})
    with pytest.raises(LiteInputError, match="dimension 2 must be 32, got 31"):
        engine.run({"x": np.zeros((1, 3, 31, 32), np.float32)})


# --- memory plan ---------------------------------------------------------------------------------------------


def test_arena_run_matches_and_the_plan_never_overlaps_live_tensors(tmp_path):
    pkg = small_cnn(tmp_path)
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    want = ort_outputs(pkg, x)
    graph = from_onnx(pkg.full_model())
    results = {}
    for memory in ("keep", "free", "arena"):
        engine = Engine(graph, memory=memory)
        first = engine.run({"x": x})["y"]
        second = engine.run({"x": x})["y"]  # in the arena for "arena"
        np.testing.assert_allclose(first, want, atol=1e-4)
        np.testing.assert_allclose(second, want, atol=1e-4)
        results[memory] = engine
    plan = results["arena"].plan_for({"x": x})
    assert plan is not None and plan.arena_bytes < plan.naive_bytes
    slots = list(plan.slots.values())
    for a in slots:
        for b in slots:
            if a is not b and a.first <= b.last and b.first <= a.last:  # alive at the same time
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a, b)
    steps = range(max(s.last for s in slots) + 1)
    alive = max(sum(s.nbytes for s in slots if s.first <= t <= s.last) for t in steps)
    assert plan.live_peak() == alive <= plan.arena_bytes  # the floor under any arena for this order


# --- format and export ---------------------------------------------------------------------------------------


def test_flite_round_trip_int8_and_damaged_files(tmp_path):
    pkg = small_cnn(tmp_path)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = ort_outputs(pkg, x)
    graph = from_onnx(pkg.full_model())
    save(graph, tmp_path / "m.flite")
    np.testing.assert_allclose(load(tmp_path / "m.flite").run({"x": x})["y"], want, atol=1e-4)
    save(graph, tmp_path / "q.flite", int8_min_elements=64)
    quantized = load(tmp_path / "q.flite").run({"x": x})["y"]
    assert np.abs(quantized - want).max() < 0.05 * np.abs(want).max()  # int8 weights: close, not exact
    big = [n for n, a in graph.weights.items() if a.size >= 64]
    assert big, "the test model should have weights big enough to quantize"
    raw = (tmp_path / "m.flite").read_bytes()
    (tmp_path / "bad.flite").write_bytes(b"NOTLITE" + raw[7:])
    with pytest.raises(FormatError, match="not a lite model"):
        load(tmp_path / "bad.flite")
    (tmp_path / "short.flite").write_bytes(raw[: len(raw) - 200])
    with pytest.raises(FormatError, match="outside the file"):
        load(tmp_path / "short.flite")


def test_export_lite_cli_and_python_m_runner(tmp_path, capsys):
    pkg = small_cnn(tmp_path)
    out = tmp_path / "cnn.flite"
    assert cli(["export", "lite", str(pkg.root), "-o", str(out)]) == 0
    report = capsys.readouterr().out
    assert "memory plan:" in report and "fold_batchnorm" in report and "fuse_activation" in report
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-m", "ferry.lite", str(out), "--input", f"x={tmp_path / 'x.npy'}",
         "--output", str(tmp_path / "out.npz")],
        check=True, capture_output=True,
    )  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], ort_outputs(pkg, x), atol=1e-4)
    # The stored plan covers batch 1, so the first run already uses the arena.
    assert load(out).plan_for({"x": x}) is not None


def test_int8_export_is_at_least_three_times_smaller(tmp_path, capsys):
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    pkg = ferry.save(model, tmp_path / "mm")
    assert cli(["export", "lite", str(pkg.root), "-o", str(tmp_path / "f.flite")]) == 0
    assert cli(["export", "lite", str(pkg.root), "-o", str(tmp_path / "q.flite"), "--int8"]) == 0
    assert "smaller, not faster" in capsys.readouterr().out
    assert (tmp_path / "q.flite").stat().st_size * 3 < (tmp_path / "f.flite").stat().st_size


def test_bundle_runs_in_a_fresh_venv_with_numpy_alone(tmp_path):
    pkg = small_cnn(tmp_path)
    bundle = tmp_path / "bundle"
    assert cli(["export", "lite", str(pkg.root), "-o", str(bundle), "--bundle"]) == 0
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "numpy"], check=True, capture_output=True)
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [python, "-m", "ferry_lite", "model.flite", "--input", f"x={tmp_path / 'x.npy'}", "--output", "out.npz"],
        cwd=bundle, env=clean, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert {line.split("==")[0].lower() for line in listed.split()} <= {"numpy", "pip", "setuptools"}
    np.testing.assert_allclose(np.load(bundle / "out.npz")["y"], ort_outputs(pkg, x), atol=1e-4)


def test_the_bundle_run_line_works_as_printed(tmp_path, capsys):
    import shlex

    pkg = small_cnn(tmp_path)
    bundle = tmp_path / "bundle"
    assert cli(["export", "lite", str(pkg.root), "-o", str(bundle), "--bundle"]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("bundle:"))
    command = line.split("&& ", 1)[1].rstrip(")")
    done = subprocess.run(shlex.split(command.replace("python", sys.executable, 1)), cwd=bundle,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mean latency over 10 runs" in done.stdout


def test_lite_backend_in_config(tmp_path):
    pkg = small_cnn(tmp_path)
    config = ferry.Config(pkg.root)
    config.set_backend("lite")
    config.enable_profile()
    predictor = ferry.create_predictor(config)
    x = np.random.default_rng(6).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predictor.predict({"x": x})["y"], ort_outputs(pkg, x), atol=1e-4)
    assert "lite" in predictor.backend
    assert {row.op_type for row in predictor.profile()} >= {"Conv", "Gemm"}


CONV_CASES = [
    ((2, 8, 33, 34), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 8, 20, 21), (8, 1, 3, 3), {"group": 8, "pads": [0, 1, 2, 1], "strides": [2, 2]}),
    ((1, 8, 20, 20), (8, 1, 3, 3), {"group": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((2, 16, 40, 40), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]}),  # contiguous windows, stride 1
    ((2, 16, 40, 40), (24, 16, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # windows of stride phases
    ((2, 8, 30, 31), (12, 4, 3, 3), {"group": 2, "pads": [1, 2, 1, 0], "dilations": [2, 1]}),  # grouped windows
    ((3, 6, 12, 12), (8, 3, 3, 3), {"group": 2, "strides": [1, 2]}),  # grouped im2col, batch 3
    ((1, 8, 7, 7), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),  # small image: im2col
    ((1, 3, 30, 30), (4, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((2, 5, 7, 7, 6), (4, 5, 3, 2, 2), {"pads": [1, 0, 0, 1, 1, 1]}),  # 3-D
    ((2, 6, 10, 11), (9, 6, 1, 1), {}),  # 1x1: a product per image and block of positions
    ((2, 6, 10, 11), (8, 3, 1, 1), {"group": 2}),  # grouped 1x1
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_CASES)
@pytest.mark.parametrize("block_bytes", [None, 4096])  # 4 KiB: every path works in several blocks
def test_conv_paths_agree_with_onnxruntime(x_shape, w_shape, attrs, block_bytes, monkeypatch):
    import onnxruntime as ort

    from ferry.lite.ops import conv
    from ferry.lite.ops.conv import Conv

    if block_bytes:
        monkeypatch.setattr(conv, "BLOCK_BYTES", block_bytes)

    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "conv",
        [vi("x", TensorProto.FLOAT, x_shape), vi("w", TensorProto.FLOAT, w_shape)], [vi("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "w": w}
    )
    np.testing.assert_allclose(Conv(x, w, **attrs), want[0], atol=1e-4, rtol=1e-4)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)  # some paths add it inside, others after
    want = want[0] + bias.reshape(1, -1, *[1] * (len(x_shape) - 2))
    np.testing.assert_allclose(Conv(x, w, bias, **attrs), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_CASES)
@pytest.mark.parametrize("activation", ["Relu", "Clip", "Sigmoid", ""])
def test_fused_conv_bias_residual_activation_on_every_path(x_shape, w_shape, attrs, activation, monkeypatch):
    """Bias, residual and activation on every convolution path, in blocks (4 KiB here: many per call)."""
    from ferry.lite.ops import conv
    from ferry.lite.ops.contrib import FusedConv
    from ferry.lite.ops.conv import Conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 4096)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    plain = Conv(x, w, b, **attrs)
    z = rng.standard_normal(plain.shape).astype(np.float32)
    params = {"Clip": [-0.5, 1.0], "Relu": [], "Sigmoid": [], "": []}[activation]
    want = plain + z
    want = {"Relu": lambda v: np.maximum(v, 0), "Clip": lambda v: np.clip(v, -0.5, 1.0),
            "Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "": lambda v: v}[activation](want)  # fmt: skip
    slot = np.empty(plain.shape, np.float32)
    got = FusedConv(x, w, b, z, activation=activation, activation_params=params, out=slot, **attrs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got is slot) == (activation != "Sigmoid")  # Sigmoid runs after, on a new array


@pytest.mark.parametrize(("n", "rows", "row_bytes"), [(8, 7, 100), (3, 50, 1000), (2, 9, 10_000), (1, 1, 1)])
def test_conv_blocks_cover_every_output_row_once_and_stay_under_the_budget(n, rows, row_bytes, monkeypatch):
    from ferry.lite.ops import conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 4096)
    seen = [(i, r) for i0, i1, r0, r1 in conv._pieces(n, rows, row_bytes) for i in range(i0, i1) for r in range(r0, r1)]
    assert sorted(seen) == [(i, r) for i in range(n) for r in range(rows)]
    for i0, i1, r0, r1 in conv._pieces(n, rows, row_bytes):
        assert (i1 - i0) * (r1 - r0) * row_bytes <= 4096 or (i1 - i0, r1 - r0) == (1, 1)


def test_conv_writes_into_a_fitting_arena_slot_and_only_into_one():
    from ferry.lite.ops.contrib import FusedConv
    from ferry.lite.ops.conv import Conv

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    want = Conv(x, w, pads=[1, 1, 1, 1])
    slot = np.empty((1, 4, 8, 8), np.float32)
    assert Conv(x, w, pads=[1, 1, 1, 1], out=slot) is slot
    np.testing.assert_array_equal(slot, want)
    relu = FusedConv(x, w, pads=[1, 1, 1, 1], activation="Relu", out=slot)
    assert relu is slot
    np.testing.assert_array_equal(slot, np.maximum(want, 0))
    for wrong in (np.empty((1, 4, 7, 7), np.float32), np.empty((1, 4, 8, 8), np.float64)):
        got = Conv(x, w, pads=[1, 1, 1, 1], out=wrong)
        assert got is not wrong
        np.testing.assert_array_equal(got, want)


def test_maxpool_in_channel_blocks_matches_one_block(monkeypatch):
    from ferry.lite.ops import nn

    x = np.random.default_rng(4).standard_normal((2, 5, 11, 12)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    whole = nn.MaxPool(x, **attrs)
    monkeypatch.setattr(nn, "POOL_BLOCK_BYTES", 1)  # one channel per block
    np.testing.assert_array_equal(nn.MaxPool(x, **attrs), whole)
    assert whole.shape == (2, 5, 6, 7)


@pytest.mark.parametrize("with_bias", [False, True])
def test_skip_layernorm_kernel_agrees_with_onnxruntime(with_bias):
    """SkipLayerNormalization, as ONNX Runtime's transformer optimizer writes it into exported models."""
    import onnxruntime as ort

    from ferry.lite.ops.contrib import SkipLayerNormalization

    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in
             [("x", (2, 5, 16)), ("skip", (2, 5, 16)), ("gamma", (16,)), ("beta", (16,)), ("bias", (16,))]}  # fmt: skip
    names = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    vi = helper.make_tensor_value_info
    node = helper.make_node("SkipLayerNormalization", names, ["y"], domain="com.microsoft", epsilon=1e-6)
    graph = helper.make_graph([node], "skip_ln", [vi(n, TensorProto.FLOAT, feeds[n].shape) for n in names],
                              [vi("y", TensorProto.FLOAT, None)])  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8
    )
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {n: feeds[n] for n in names}
    )[0]
    got = SkipLayerNormalization(*[feeds[n] for n in names], epsilon=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_dropout_in_training_mode_drops_at_random_without_a_seed():
    from ferry.lite.ops.norm import Dropout

    x = np.ones((200, 50), np.float32)
    y, mask = Dropout(x, np.float32(0.3), np.bool_(True))
    np.testing.assert_array_equal(y, np.where(mask, np.float32(1 / 0.7), 0))
    assert 0.25 < 1 - mask.mean() < 0.35
    _, again = Dropout(x, np.float32(0.3), np.bool_(True))
    assert not np.array_equal(mask, again)  # a fresh mask each run
    y, mask = Dropout(x, np.float32(0.3), np.bool_(False))
    assert y is x and mask.all()


def test_one_engine_runs_in_several_threads_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    pkg = small_cnn(tmp_path)
    engine = Engine(from_onnx(pkg.full_model()))
    rng = np.random.default_rng(8)
    batches = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    want = [ort_outputs(pkg, x) for x in batches]
    engine.run({"x": batches[0]})  # plan once; every thread then runs in an arena of its own

    def work(i: int) -> bool:
        return all(np.allclose(engine.run({"x": batches[i]})["y"], want[i], atol=1e-4) for _ in range(20))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


def test_matmul_and_row_kernels_write_into_a_fitting_arena_slot():
    """Each fills its slot when it has the result's shape and dtype, and leaves any other alone."""
    from ferry.lite.ops.contrib import BiasGelu, SkipLayerNormalization
    from ferry.lite.ops.nn import MaxPool
    from ferry.lite.ops.norm import LayerNormalization
    from ferry.lite.ops.reduce import MatMul, Softmax

    rng = np.random.default_rng(5)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, g, b = r(2, 3, 8), r(8), r(8)
    calls = [
        (MatMul, (r(2, 3, 4), r(4, 5)), {}),
        (MatMul, (r(2, 3, 4, 6), r(2, 3, 6, 5)), {}),
        (MatMul, (r(3, 4), r(4, 2)), {}),
        (MatMul, (r(1, 4, 6), r(3, 6, 2)), {}),
        (Softmax, (x,), {"axis": -1}),
        (LayerNormalization, (x, g, b), {"axis": -1}),
        (SkipLayerNormalization, (x, r(2, 3, 8), g, b), {}),
        (BiasGelu, (x, b), {}),
        (MaxPool, (r(2, 3, 9, 8),), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ]
    for kernel, args, attrs in calls:
        want = kernel(*args, **attrs)
        want = want[0] if isinstance(want, tuple) else want
        slot = np.empty(want.shape, np.float32)
        got = kernel(*args, **attrs, out=slot)
        assert (got[0] if isinstance(got, tuple) else got) is slot, kernel.__name__
        np.testing.assert_allclose(slot, want, rtol=1e-5, atol=1e-5)
        for wrong in (np.empty(want.shape, np.float64), np.empty((*want.shape[:-1], want.shape[-1] + 1), np.float32)):
            got = kernel(*args, **attrs, out=wrong)
            assert (got[0] if isinstance(got, tuple) else got) is not wrong, kernel.__name__
            np.testing.assert_allclose(got[0] if isinstance(got, tuple) else got, want, rtol=1e-5, atol=1e-5)


def test_reshape_outputs_stay_views_of_their_input_slot():
    """A Reshape of an intermediate gets no slot and no copy; the tensor it views keeps its slot until the
    view's last reader, so a later tensor cannot take that storage while the view is in use."""
    n = helper.make_node
    nodes = [
        n("Relu", ["x"], ["a"]),
        n("Reshape", ["a", "shape"], ["v"]),  # a view of a's slot
        n("Neg", ["x"], ["b"]),
        n("Relu", ["b"], ["c"]),  # written while v is alive: must not land on a's storage
        n("Reshape", ["c", "shape"], ["d"]),
        n("Add", ["v", "d"], ["y"]),
    ]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "views", [vi("x", TensorProto.FLOAT, [4, 6])], [vi("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([2, 12], np.int64), "shape")])  # fmt: skip
    engine = Engine(from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)))
    rng = np.random.default_rng(9)
    for _ in range(3):
        x = rng.standard_normal((4, 6)).astype(np.float32)
        want = (np.maximum(x, 0) + np.maximum(-x, 0)).reshape(2, 12)
        np.testing.assert_array_equal(engine.run({"x": x})["y"], want)
    plan = engine.plan_for({"x": x})
    assert plan.aliases == {"v": "a", "d": "c"} and not {"v", "d"} & set(plan.slots)
    a, c = plan.slots["a"], plan.slots["c"]
    assert a.last >= 5 and (a.offset + a.nbytes <= c.offset or c.offset + c.nbytes <= a.offset)
    assert Plan.from_json(plan.to_json()).aliases == plan.aliases
