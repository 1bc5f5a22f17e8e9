"""The Predictor API: handles, zero copy, input checks, threads, clones, backends, profiling, auto."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest

import ferry
from conftest import make_mlp, make_two_input, mlp_reference
from ferry.errors import BackendUnavailableError, ConfigError, InputError


def predictor(pkg, backend="onnxruntime", **options) -> ferry.Predictor:
    config = ferry.Config(pkg)
    config.set_backend(backend)
    for key, value in options.items():
        getattr(config, key)(*value) if isinstance(value, tuple) else getattr(config, key)(value)
    return ferry.create_predictor(config)


def test_handles_follow_paddle_flow(mlp_package):
    p = predictor(mlp_package)
    assert p.get_input_names() == ["x"]
    assert p.get_output_names() == ["y"]
    x = np.arange(12, dtype=np.float32) / 10
    handle = p.get_input_handle("x")
    handle.reshape([3, 4])
    handle.copy_from_cpu(x)
    assert handle.shape() == [3, 4]
    assert p.run() is True
    out = p.get_output_handle("y")
    assert out.shape() == [3, 3]
    assert out.dtype == "float32"
    np.testing.assert_allclose(out.copy_to_cpu(), mlp_reference(x.reshape(3, 4)), rtol=1e-5, atol=1e-6)


def test_copy_from_cpu_copies(mlp_package):
    p = predictor(mlp_package)
    x = np.ones((2, 4), np.float32)
    p.get_input_handle("x").copy_from_cpu(x)
    x[:] = 5.0  # too late: the handle holds its own copy
    p.run()
    np.testing.assert_allclose(p.get_output_handle("y").copy_to_cpu(), mlp_reference(np.ones((2, 4), np.float32)))


def test_share_external_data_makes_no_copy(mlp_package):
    p = predictor(mlp_package)
    x = np.ones((2, 4), np.float32)
    handle = p.get_input_handle("x")
    handle.share_external_data(x)
    # ONNX Runtime's value reads the very memory of `x` ...
    assert handle.value.data_ptr() == x.__array_interface__["data"][0]
    # ... so a change made after sharing is what the model sees.
    x[0, :] = 3.0
    p.run()
    np.testing.assert_allclose(p.get_output_handle("y").copy_to_cpu(), mlp_reference(x), rtol=1e-5)


def test_share_external_data_needs_contiguous_memory(mlp_package):
    p = predictor(mlp_package)
    with pytest.raises(InputError, match="C-contiguous"):
        p.get_input_handle("x").share_external_data(np.ones((4, 2), np.float32).T)


def test_predict_takes_one_array_or_a_dict(mlp_package):
    p = predictor(mlp_package)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(p.predict(x)["y"], p.predict({"x": x})["y"])


def test_predict_selected_outputs(tmp_path):
    pkg = ferry.save(make_mlp(extra_output=True), tmp_path / "two")
    p = predictor(pkg)
    out = p.predict({"x": np.ones((2, 4), np.float32), "z_in": np.zeros((2, 2), np.float32)}, outputs=["z"])
    assert list(out) == ["z"]
    np.testing.assert_allclose(out["z"], 0.5)
    with pytest.raises(InputError, match="no output"):
        p.predict({"x": np.ones((2, 4), np.float32), "z_in": np.zeros((2, 2), np.float32)}, outputs=["w"])


# --- input checks ---------------------------------------------------------------------------------


@pytest.fixture
def two(tmp_path):
    return predictor(ferry.save(make_two_input(), tmp_path / "two", name="two"))


def good_feeds(batch=2, seq=5):
    return {
        "ids": np.ones((batch, seq), np.int64),
        "mask": np.ones((batch, seq), np.float32),
        "img": np.ones((batch, 3, 4, 4), np.float32),
    }


def test_good_inputs_run(two):
    out = two.predict(good_feeds())
    assert out["out"].shape == (2, 5)
    assert out["pooled"].shape == (2, 3)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda f: f.update(idz=f.pop("ids")),
            r"model 'two': unknown input\(s\) \['idz'\]; missing input\(s\) \['ids'\]",
        ),
        (lambda f: f.pop("mask"), r"missing input\(s\) \['mask'\]; the model takes ids: int64\[batch,seq\]"),
        (
            lambda f: f.update(mask=f["mask"].astype(np.float64)),
            r"model 'two', input 'mask': expected dtype float32, got float64",
        ),
        (
            lambda f: f.update(ids=f["ids"].astype(np.int32)),
            r"model 'two', input 'ids': expected dtype int64, got int32",
        ),
        (
            lambda f: f.update(img=np.ones((2, 3, 4), np.float32)),
            r"input 'img': expected rank 4 float32\[batch,3,4,4\], got rank 3 with shape \[2, 3, 4\]",
        ),
        (
            lambda f: f.update(img=np.ones((2, 3, 5, 4), np.float32)),
            r"input 'img': expected float32\[batch,3,4,4\], got shape \[2, 3, 5, 4\] \(axis 2 must be 4\)",
        ),
        (
            lambda f: f.update(mask=np.ones((2, 6), np.float32)),
            r"dimension 'seq' is 5 in input 'ids' but 6 in input 'mask'",
        ),
        (
            lambda f: f.update(mask=[[1.0] * 5] * 2),
            r"input 'mask': expected a numpy.ndarray float32\[batch,seq\], got list",
        ),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(two, change, pattern):
    feeds = good_feeds()
    change(feeds)
    with pytest.raises(InputError, match=pattern):
        two.predict(feeds)


def test_one_array_for_a_multi_input_model(two):
    with pytest.raises(InputError, match="takes 3 inputs"):
        two.predict(np.ones((2, 5), np.int64))


def test_handle_errors(two):
    with pytest.raises(InputError, match="has no input 'nope'"):
        two.get_input_handle("nope")
    with pytest.raises(InputError, match=r"no data given for input\(s\)"):
        two.run()
    handle = two.get_input_handle("ids")
    handle.reshape([2, 3])
    with pytest.raises(InputError, match="holds 6 elements, but the data has 8"):
        handle.copy_from_cpu(np.ones(8, np.int64))
    with pytest.raises(InputError, match="expected a numpy.ndarray, got list"):
        handle.copy_from_cpu([1, 2, 3])


# --- threads, clones, pools -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_many_threads_predict_at_once(mlp_package, backend):
    p = predictor(mlp_package, backend)
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(40):
            x = rng.standard_normal((rng.integers(1, 9), 4)).astype(np.float32)
            got = p.predict(x)["y"]
            if not np.allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-4):
                errors.append(f"thread {seed}: wrong result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_clones_share_weights_and_have_their_own_handles(mlp_package):
    p = predictor(mlp_package)
    c = p.clone()
    assert c._session is p._session  # one ONNX Runtime session: the weights are loaded once
    assert c.get_input_handle("x") is not p.get_input_handle("x")
    p.get_input_handle("x").copy_from_cpu(np.ones((1, 4), np.float32))
    c.get_input_handle("x").copy_from_cpu(np.zeros((1, 4), np.float32))
    p.run()
    c.run()
    assert not np.allclose(p.get_output_handle("y").copy_to_cpu(), c.get_output_handle("y").copy_to_cpu())


def test_predictor_pool_with_threads(mlp_package):
    config = ferry.Config(mlp_package)
    config.set_backend("openvino")
    pool = ferry.PredictorPool(config, 4)
    assert len(pool) == 4
    assert pool.retrieve(0) is not pool.retrieve(1)
    results = {}

    def worker(i: int) -> None:
        pred = pool.retrieve(i)
        h = pred.get_input_handle("x")
        x = np.full((2, 4), float(i), np.float32)
        for _ in range(20):
            h.copy_from_cpu(x)
            pred.run()
        results[i] = (x, pred.get_output_handle("y").copy_to_cpu())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in results.values():
        np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError):
        ferry.PredictorPool(config, 0)


# --- backends and options -------------------------------------------------------------------------


def make_cnn(tmp_path):
    """A small conv net with BatchNorm, so bf16 would show."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ferry.save(model, tmp_path / "cnn")


def test_openvino_fp32_matches_onnxruntime_within_1e5(tmp_path):
    pkg = make_cnn(tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32) * 10
    ort_out = predictor(pkg, "onnxruntime").predict(x)["y"]
    ov = predictor(pkg, "openvino")
    assert ov._session._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    np.testing.assert_allclose(ov.predict(x)["y"], ort_out, atol=1e-5 * np.abs(ort_out).max(), rtol=1e-5)


def test_openvino_bf16_is_what_was_asked(tmp_path):
    pkg = make_cnn(tmp_path)
    ov = predictor(pkg, "openvino", set_precision="bf16")
    assert ov._session._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    ref = predictor(pkg).predict(x)["y"]
    np.testing.assert_allclose(ov.predict(x)["y"], ref, rtol=0.05, atol=0.05 * np.abs(ref).max())


def test_onnxruntime_refuses_bf16(mlp_package):
    with pytest.raises(ConfigError, match="fp32 only"):
        predictor(mlp_package, set_precision="bf16")


def test_gpu_and_tensorrt_say_what_to_install(mlp_package):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.fail("this test expects a CPU-only onnxruntime")
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime-gpu"):
        predictor(mlp_package, enable_gpu=0)
    config = ferry.Config(mlp_package)
    config.set_backend("onnxruntime")
    config.enable_tensorrt(precision="fp16", cache_dir="/tmp/trt")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        ferry.create_predictor(config)


def test_config_validates_options(mlp_package):
    config = ferry.Config(mlp_package)
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'"):
        config.set_backend("tensorflow")
    with pytest.raises(ConfigError, match="positive int"):
        config.set_cpu_threads(0)
    with pytest.raises(ConfigError, match="unknown precision"):
        config.set_precision("int4")
    config.set_cpu_threads(2)
    config.switch_ir_optim(False)
    config.enable_memory_optim(False)
    summary = config.summary()
    assert "cpu threads  | 2" in summary
    assert "ir optim     | off" in summary


def test_ir_optim_off_runs_the_same(mlp_package):
    x = np.ones((3, 4), np.float32)
    on = predictor(mlp_package).predict(x)["y"]
    off = predictor(mlp_package, switch_ir_optim=False, enable_memory_optim=False, set_cpu_threads=1).predict(x)["y"]
    np.testing.assert_allclose(on, off, rtol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_profile_gives_per_op_times(tmp_path, backend):
    pkg = make_cnn(tmp_path)
    config = ferry.Config(pkg)
    config.set_backend(backend)
    config.enable_profile()
    p = ferry.create_predictor(config)
    for _ in range(3):
        p.predict(np.ones((1, 3, 16, 16), np.float32))
    rows = p.profile()
    ops = {r.op_type for r in rows}
    assert any("Conv" in op or "Convolution" in op for op in ops), ops
    assert all(r.total_ms >= 0 and r.calls >= 1 for r in rows)
    assert "share" in p.profile_table()


def test_profile_without_enable_is_an_error(mlp_package):
    with pytest.raises(ConfigError, match="enable_profile"):
        predictor(mlp_package).profile()


def test_auto_without_record_uses_onnxruntime(mlp_package):
    p = predictor(mlp_package, "auto")
    assert p.backend.startswith("onnxruntime")


def test_auto_follows_tuning_record_per_batch(mlp_package):
    mlp_package.save_tuning({"fp32": {"fastest": {"1": "openvino", "32": "onnxruntime"}}})
    pkg = ferry.load(mlp_package.root)
    p = predictor(pkg, "auto")
    assert "openvino" in p.backend and "onnxruntime" in p.backend
    one = {"x": np.ones((1, 4), np.float32)}
    many = {"x": np.ones((40, 4), np.float32)}
    assert p._session._pick(one).backend == "openvino"
    assert p._session._pick(many).backend == "onnxruntime"
    np.testing.assert_allclose(p.predict(one)["y"], mlp_reference(one["x"]), rtol=1e-4)
    np.testing.assert_allclose(p.predict(many)["y"], mlp_reference(many["x"]), rtol=1e-4)
    # The record does not change the files, so the package still verifies.
    assert ferry.load(mlp_package.root).manifest.tuning["fp32"]["fastest"]["1"] == "openvino"


def test_auto_single_winner_loads_one_engine(mlp_package):
    mlp_package.save_tuning({"fp32": {"fastest": {"1": "openvino", "32": "openvino"}}})
    p = predictor(ferry.load(mlp_package.root), "auto")
    assert p.backend.startswith("openvino")


def test_predictor_on_bare_onnx_file(mlp_onnx):
    p = predictor(mlp_onnx)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(p.predict(x)["y"], mlp_reference(x), rtol=1e-5)


def test_core_import_loads_no_framework(tmp_path, mlp_onnx):
    """The core (load, predict, onnxruntime) must not import torch, paddle, tensorflow or openvino."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, ferry\n"
        f"p = ferry.create_predictor(ferry.Config({str(mlp_onnx)!r}))\n"
        "p.predict(np.ones((1, 4), np.float32))\n"
        "heavy = [m for m in ('torch', 'paddle', 'tensorflow', 'openvino', 'sklearn', 'PIL') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_onnx_model_with_opset_13(tmp_path):
    pkg = ferry.save(make_mlp(opset=13), tmp_path / "o13")
    assert pkg.opset == 13
    onnx.checker.check_model(onnx.load(str(pkg.model_path)))
    for backend in ("onnxruntime", "openvino"):
        x = np.ones((2, 4), np.float32)
        np.testing.assert_allclose(predictor(pkg, backend).predict(x)["y"], mlp_reference(x), rtol=1e-4)


def test_spinning_can_be_turned_off(mlp_package):
    quiet = predictor(mlp_package, set_spinning=False)
    options = quiet._session._sess.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert "spinning     | off" in quiet.config.summary()
    np.testing.assert_allclose(
        quiet.predict(np.ones((1, 4), np.float32))["y"], mlp_reference(np.ones((1, 4), np.float32)), rtol=1e-5
    )


def test_validate_false_skips_only_the_checks(mlp_package):
    p = predictor(mlp_package)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(p.predict(x, validate=False)["y"], p.predict(x)["y"])
    with pytest.raises(InputError):
        p.predict(x.astype(np.float64))
    with pytest.raises(ferry.errors.BackendError):  # unchecked, the engine itself refuses
        p.predict(x.astype(np.float64), validate=False)
