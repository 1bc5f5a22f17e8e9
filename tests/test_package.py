"""The package: save/load round trip, pruning, and every way a package is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ferry
from conftest import make_mlp, mlp_reference
from ferry.errors import (
    ChecksumError,
    InputError,
    ManifestError,
    PackageError,
    SignatureMismatchError,
    UnsafePathError,
    UnsupportedModelError,
)


def test_save_writes_manifest_with_signature_checksums_and_provenance(mlp_package):
    manifest = json.loads((mlp_package.root / "ferry.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["name"] == "mlp"
    assert manifest["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert manifest["signature"]["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]
    entry = manifest["files"]["model.onnx"]
    assert entry["size"] == (mlp_package.root / "model.onnx").stat().st_size
    assert len(entry["sha256"]) == 64
    assert manifest["provenance"]["opset"] == 17
    assert manifest["provenance"]["created"]


def test_loaded_package_runs_and_matches_numpy(mlp_package):
    pkg = ferry.load(mlp_package.root)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    out = ferry.create_predictor(ferry.Config(pkg)).predict(x)["y"]
    np.testing.assert_allclose(out, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_save_refuses_to_overwrite_unless_asked(tmp_path, mlp_package):
    with pytest.raises(PackageError, match="already exists"):
        ferry.save(make_mlp(), mlp_package.root)
    ferry.save(make_mlp(), mlp_package.root, overwrite=True)


def test_prune_keeps_requested_outputs_and_the_inputs_they_need(tmp_path):
    pkg = ferry.save(make_mlp(extra_output=True), tmp_path / "p", outputs=["y"])
    model = onnx.load(str(pkg.model_path))
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    assert "Sigmoid" not in {n.op_type for n in model.graph.node}


def test_prune_to_an_intermediate_tensor(tmp_path):
    pkg = ferry.save(make_mlp(), tmp_path / "p", outputs=["h2"])
    model = onnx.load(str(pkg.model_path))
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu"]
    assert {t.name for t in model.graph.initializer} == {"W1", "B1"}
    assert pkg.signature.outputs[0].shape == ("batch", 8)


def test_prune_unknown_output_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not_there"):
        ferry.save(make_mlp(), tmp_path / "p", outputs=["not_there"])


def test_dropout_is_dropped_and_results_unchanged(tmp_path):
    pkg = ferry.save(make_mlp(dropout=True), tmp_path / "p")
    ops = [n.op_type for n in onnx.load(str(pkg.model_path)).graph.node]
    assert "Dropout" not in ops
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(ferry.create_predictor(ferry.Config(pkg)).predict(x)["y"], mlp_reference(x), rtol=1e-5)


def test_dynamic_dims_can_be_renamed(tmp_path):
    pkg = ferry.save(make_mlp(), tmp_path / "p", dim_names={"batch": "n", "y:0": "rows"})
    assert pkg.signature.inputs[0].shape == ("n", 4)
    assert pkg.signature.outputs[0].shape == ("rows", 3)


def test_external_data_package_loads_and_runs(tmp_path):
    pkg = ferry.save(make_mlp(), tmp_path / "ext", external_data=True)
    assert set(pkg.manifest.files) == {"model.onnx", "model.onnx.data"}
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(ferry.create_predictor(ferry.Config(pkg)).predict(x)["y"], mlp_reference(x), rtol=1e-5)


# --- refusals -------------------------------------------------------------------------------------


def test_tampered_model_is_caught(mlp_package):
    path = mlp_package.root / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        ferry.load(mlp_package.root)


def test_truncated_model_is_caught(mlp_package):
    path = mlp_package.root / "model.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ChecksumError, match="truncated"):
        ferry.load(mlp_package.root)


def test_missing_manifest(tmp_path):
    (tmp_path / "model.onnx").write_bytes(make_mlp().SerializeToString())
    with pytest.raises(ManifestError, match="no ferry.json"):
        ferry.load(tmp_path)


def test_manifest_not_json(mlp_package):
    (mlp_package.root / "ferry.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ferry.load(mlp_package.root)


def test_manifest_schema_reports_every_problem(mlp_package):
    path = mlp_package.root / "ferry.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    data["signature"]["inputs"][0]["dtype"] = "float33"
    del data["name"]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as err:
        ferry.load(mlp_package.root)
    message = str(err.value)
    assert "format_version must be the integer 1, got 99" in message
    assert "float33" in message
    assert "'name'" in message


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("provenance", 5, "'provenance' must be an object, got 5"),
        ("provenance", {"opset": "x"}, "provenance.opset must be int, got 'x'"),
        ("provenance", {"who": "me"}, "provenance.who is not a provenance field"),
        ("tuning", "x", "'tuning' must be an object, got 'x'"),
        ("tuning", 5, "'tuning' must be an object, got 5"),
        ("compression", [1], "'compression' must be an object, got [1]"),
        ("version", {}, "'version' must be a short string or a non-negative integer, got {}"),
        ("format_version", True, "format_version must be the integer 1, got True"),
        ("labels", [1, 2], "'labels' must be a list of strings"),
        ("preprocessing", [{"op": "sharpen"}], "preprocessing[0]: unknown op 'sharpen'"),
        ("preprocessing", [{"op": "resize", "sizes": [2, 2]}], "preprocessing[0] (resize)"),
        ("postprocessing", [{"op": "topk", "k": 1, "extra": 2}], "postprocessing[0] (topk)"),
        ("surprise", 1, "unknown field(s) ['surprise']"),
    ],
)
def test_malformed_manifest_fields_are_named(mlp_package, field, value, message):
    path = mlp_package.root / "ferry.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as err:
        ferry.load(mlp_package.root)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [("[" * 100000 + "]" * 100000, "nested too deep"), ('{"version": ' + "9" * 5000 + "}", "not valid JSON")],
)
def test_manifest_json_beyond_the_parser_limits(mlp_package, text, message):
    (mlp_package.root / "ferry.json").write_text(text)
    with pytest.raises(ManifestError, match=message):
        ferry.load(mlp_package.root)


def test_manifest_signature_must_match_graph(mlp_package):
    path = mlp_package.root / "ferry.json"
    data = json.loads(path.read_text())
    data["signature"]["inputs"][0]["dtype"] = "int64"
    path.write_text(json.dumps(data))
    with pytest.raises(SignatureMismatchError, match=r"'x' is int64\[batch,4\] in the manifest but float32"):
        ferry.load(mlp_package.root)


def test_manifest_fixed_dim_must_match_graph(mlp_package):
    path = mlp_package.root / "ferry.json"
    data = json.loads(path.read_text())
    data["signature"]["outputs"][0]["shape"] = ["batch", 7]
    path.write_text(json.dumps(data))
    with pytest.raises(SignatureMismatchError, match="axis 1 is 7 in the manifest but 3 in the graph"):
        ferry.load(mlp_package.root)


def _point_external_data(pkg_root: Path, location: str) -> None:
    """Rewrite the package's external-data location and re-record the model checksum, like an attacker would."""
    model = onnx.load(str(pkg_root / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(pkg_root / "model.onnx"))
    manifest = json.loads((pkg_root / "ferry.json").read_text())
    from ferry.package.checks import sha256_of

    manifest["files"]["model.onnx"] = {
        "sha256": sha256_of(pkg_root / "model.onnx"),
        "size": (pkg_root / "model.onnx").stat().st_size,
    }
    (pkg_root / "ferry.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("location", "message"),
    [("../secret.bin", r"contains '\.\.'"), ("/etc/passwd", "absolute"), ("C:/x.bin", "absolute")],
)
def test_external_data_outside_the_package_is_refused(tmp_path, location, message):
    pkg = ferry.save(make_mlp(), tmp_path / "ext", external_data=True)
    _point_external_data(pkg.root, location)
    with pytest.raises(UnsafePathError, match=message):
        ferry.load(pkg.root)


def test_external_data_through_a_symlink_out_is_refused(tmp_path):
    pkg = ferry.save(make_mlp(), tmp_path / "ext", external_data=True)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((pkg.root / "model.onnx.data").read_bytes())
    os.symlink(outside, pkg.root / "link.bin")
    _point_external_data(pkg.root, "link.bin")
    with pytest.raises(UnsafePathError, match="outside the package"):
        ferry.load(pkg.root)


def test_external_data_not_listed_in_manifest_is_refused(tmp_path):
    pkg = ferry.save(make_mlp(), tmp_path / "ext", external_data=True)
    (pkg.root / "other.bin").write_bytes((pkg.root / "model.onnx.data").read_bytes())
    _point_external_data(pkg.root, "other.bin")
    with pytest.raises(ChecksumError, match="reads 'other.bin', which ferry.json does not list"):
        ferry.load(pkg.root)


def test_manifest_file_list_cannot_point_outside(mlp_package):
    path = mlp_package.root / "ferry.json"
    data = json.loads(path.read_text())
    data["files"]["../../etc/hosts"] = {"sha256": "0" * 64, "size": 1}
    path.write_text(json.dumps(data))
    with pytest.raises(UnsafePathError):
        ferry.load(mlp_package.root)


def test_unknown_op_is_refused_at_load(tmp_path):
    model = make_mlp()
    model.graph.node[2].op_type = "Relu_Evil"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match="Relu_Evil"):
        ferry.load(path)


def test_garbage_onnx_file_is_refused(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(PackageError, match="not a valid ONNX model"):
        ferry.load(path)


def test_opset_newer_than_the_backend_supports(tmp_path):
    from ferry.inference.backends import get_backend

    # One past what the installed engine runs, asked of the engine itself: no opset is assumed.
    newer = get_backend("onnxruntime").max_opset() + 1
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", 1, [1])],
        [helper.make_tensor_value_info("y", 1, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", newer)], ir_version=8)
    path = tmp_path / "new.onnx"
    onnx.save(model, str(path))
    config = ferry.Config(path)
    config.set_backend("onnxruntime")
    with pytest.raises(UnsupportedModelError, match=f"opset {newer} is newer than onnxruntime"):
        ferry.create_predictor(config)


def test_bare_onnx_file_is_wrapped_with_signature_from_graph(mlp_onnx):
    pkg = ferry.load(mlp_onnx)
    assert pkg.root is None
    assert pkg.name == "mlp"
    assert pkg.signature.inputs[0].shape == ("batch", 4)


def constant_bomb(shape_op: str = "ConstantOfShape", side: int = 16000) -> onnx.ModelProto:
    """A tiny graph whose constant part is huge: [side, side] float32 built from an initializer."""
    shape = numpy_helper.from_array(np.array([side, side], np.int64), "shape")
    if shape_op == "ConstantOfShape":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb")]
        inits = [shape]
    else:  # Expand of a scalar to the same shape
        nodes = [helper.make_node("Expand", ["one", "shape"], ["big"], name="bomb")]
        inits = [shape, numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes.append(helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0))
    nodes.append(helper.make_node("Add", ["x", "s"], ["y"]))
    graph = helper.make_graph(
        nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("shape_op", ["ConstantOfShape", "Expand"])
def test_graphs_that_build_huge_constants_are_refused_at_load(tmp_path, shape_op):
    import tracemalloc

    path = tmp_path / "bomb.onnx"
    onnx.save(constant_bomb(shape_op), str(path))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    with pytest.raises(UnsupportedModelError, match=r"node 'bomb' \(" + shape_op + r"\) builds a constant of 977 MiB"):
        ferry.Config(path)
    assert tracemalloc.get_traced_memory()[1] < 50 << 20
    tracemalloc.stop()
    # A model that needs it can raise the limit; a small one passes the default.
    assert ferry.Config(path, max_constant_mb=2048).package.name == "bomb"
    small = tmp_path / "small.onnx"
    onnx.save(constant_bomb(shape_op, side=64), str(small))
    out = ferry.create_predictor(ferry.Config(small)).predict({"x": np.zeros(1, np.float32)})["y"]
    assert out[0] == (64 * 64 if shape_op == "Expand" else 0.0)


def test_a_rank_0_input_takes_numpy_scalars_and_0d_arrays_without_a_cast(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Mul", ["s", "x"], ["y"])], "scale",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )  # fmt: skip
    pkg = ferry.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                     tmp_path / "scale")  # fmt: skip
    predictor = ferry.create_predictor(ferry.Config(pkg))
    x = np.ones((3, 2), np.float32)
    for scale in (np.float32(2.0), np.array(2.0, np.float32)):
        np.testing.assert_array_equal(predictor.predict({"s": scale, "x": x})["y"], 2 * x)
    with pytest.raises(InputError, match="expected dtype float32, got float64"):
        predictor.predict({"s": np.float64(2.0), "x": x})
