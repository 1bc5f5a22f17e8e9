"""The optimizer as a whole: the pass manager (results, failures that name the pass, shapes provided to
the passes that need them), the def-use index kept current through edits, and `ferry optimize` on a
package. Each pass has its own module in `tests/passes/`."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ferry
from ferry.cli import main as cli
from ferry.errors import OptimizeError
from ferry.optimize import PASSES, Pass, PassResult, ir, optimize_model, run_passes
from ferry.optimize.passes import identity, shape_inference
from optimize_helpers import conv_bn_relu, model_of, run_ort, x


def test_optimize_cli_checks_parity_and_reports_what_each_pass_did(tmp_path, capsys):
    pkg = ferry.save(conv_bn_relu(), tmp_path / "cnn")
    assert cli(["optimize", str(pkg.root), "-o", str(tmp_path / "opt")]) == 0
    report = capsys.readouterr().out
    assert "3 -> 1 nodes" in report and "fold_batchnorm (folded 1)" in report and "max abs diff" in report
    assert "fuse_activation (activation 1)" in report
    optimized = ferry.load(tmp_path / "opt")
    assert [n.op_type for n in optimized.graph_proto().graph.node] == ["FusedConv"]
    assert optimized.manifest.provenance.derived_from[-1]["passes"]["fold_batchnorm"] == {"folded": 1}


def test_whole_optimizer_keeps_graph_valid_and_equal():
    model = conv_bn_relu()
    out, report = optimize_model(model)
    assert {"fold_batchnorm", "fuse_activation"} <= set(report.applied)
    feeds = {"x": x(1, 3, 8, 8)}
    np.testing.assert_allclose(run_ort(out, feeds)[0], run_ort(model, feeds)[0], atol=1e-4)


def test_a_failing_pass_is_named_with_the_passes_before_it():
    def broken(model: onnx.ModelProto) -> PassResult:
        raise KeyError("no such value")

    passes = [p for p in PASSES if p.name in ("constant_folding", "identity")] + [Pass("broken", broken)]
    with pytest.raises(OptimizeError) as info:
        run_passes(conv_bn_relu(), passes)
    assert str(info.value) == (
        "optimizer pass 'broken' failed: KeyError: 'no such value' (passes run before it: constant_folding, identity)"
    )


def test_the_manager_infers_shapes_for_the_passes_that_need_them_and_only_when_stale():
    seen = []

    def look(model: onnx.ModelProto) -> PassResult:
        seen.append({v.name for v in model.graph.value_info})
        return PassResult(model)

    inferred = []

    def infer(model: onnx.ModelProto) -> PassResult:
        inferred.append(1)
        return shape_inference.run(model)

    model = conv_bn_relu()
    del model.graph.value_info[:]
    run_passes(model, [Pass("identity", identity.run), Pass("look", look, needs_shapes=True)], infer_shapes=infer)
    assert seen == [{"c", "n"}] and inferred == [1]  # one round: nothing changed, shapes inferred once
    del model.graph.value_info[:]
    seen.clear()
    run_passes(model, [Pass("look", look)], infer_shapes=infer)
    assert seen == [set()]  # a pass that does not ask gets none


def test_unknown_passes_to_skip_are_refused():
    with pytest.raises(ValueError, match="no optimizer pass \\['fold_batchnrm'\\]"):
        optimize_model(conv_bn_relu(), skip=("fold_batchnrm",))


def _snapshot(index: ir.Index) -> tuple:
    producers = {name: id(node) for name, node in index.producer.items()}
    consumers = {name: sorted(id(n) for n in nodes) for name, nodes in index.consumers.items() if nodes}
    return producers, consumers, set(index.inits)


def test_the_index_stays_equal_to_a_fresh_one_through_every_edit():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
             helper.make_node("Mul", ["b", "b"], ["c"]), helper.make_node("Neg", ["c"], ["y"])]  # fmt: skip
    model = model_of(nodes, [("x", [4])], ["y"])
    graph = model.graph
    index = ir.Index(graph)
    relu, ident, mul, neg = list(graph.node)
    edits = [
        lambda: index.rename_input("b", "a"),
        lambda: index.remove([ident]),
        lambda: index.set_input(neg, 0, "a"),
        lambda: index.set_initializer("k", np.ones(4, np.float32)),
        lambda: index.replace([mul], helper.make_node("Add", ["a", "k"], ["c"]), where=mul),
        lambda: index.set_inputs(neg, ["c"]),
        lambda: index.set_output(relu, 0, "a2") or index.rename_input("a", "a2"),
    ]
    for edit in edits:
        edit()
        assert _snapshot(index) == _snapshot(ir.Index(graph))
    onnx.checker.check_model(model)
    assert [n.op_type for n in graph.node] == ["Relu", "Add", "Neg"]
    assert not index.alive(ident) and index.alive(neg)


def test_the_identity_pass_builds_its_index_once_however_long_the_chain(monkeypatch):
    """It rebuilt the index for every node (quadratic: 2,000 identities took 30 s)."""
    built = []

    class Counted(ir.Index):
        def __init__(self, graph: onnx.GraphProto) -> None:
            built.append(1)
            super().__init__(graph)

    monkeypatch.setattr(identity, "Index", Counted)
    names = ["x"] + [f"t{i}" for i in range(2000)]
    nodes = [helper.make_node("Identity", [a], [b]) for a, b in zip(names, names[1:])]
    nodes.append(helper.make_node("Relu", [names[-1]], ["y"]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    result = identity.run(model)
    assert result.counts == {"removed": 2000} and built == [1]
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [("Relu", ["x"])]


def test_the_optimizer_and_the_lite_exporter_do_not_import_each_other():
    """exporters/lite -> optimize -> passes/constant_folding -> exporters/lite was a circle; the ONNX to
    lite translation now sits below both (exporters/onnx_to_lite.py)."""
    src = Path(ferry.__file__).parent

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    optimizer = {m for p in (src / "optimize").rglob("*.py") for m in imports(p)}
    assert "ferry.exporters.lite" not in optimizer
    assert not any(m.startswith("ferry.optimize") for m in imports(src / "exporters" / "onnx_to_lite.py"))
