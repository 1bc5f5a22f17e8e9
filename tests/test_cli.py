"""The `ferry` command: each subcommand end to end, one-line errors, resumable predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import ferry
from conftest import interruptible, make_mlp, mlp_reference
from ferry.batch import BatchJob, read_inputs, run_job
from ferry.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True)


def test_demo_predict_classifies_the_bundled_digits():
    result = run_cli("predict", "--demo")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "correct" in x)
    correct, total = (int(v) for v in line.split()[0].split("/"))
    assert total == 20
    assert correct >= 18  # the CNN scores 98% on held-out digits


def test_convert_inspect_predict_round_trip(tmp_path, capsys):
    src = tmp_path / "mlp.onnx"
    onnx.save(make_mlp(extra_output=True), str(src))
    pkg = tmp_path / "pkg"
    assert main(["convert", str(src), "-o", str(pkg), "--outputs", "y", "--name", "tiny", "--dim", "batch=n"]) == 0
    out = capsys.readouterr().out
    assert "parity check of 'tiny'" in out

    assert main(["inspect", str(pkg), "--json", "--dim", "n=2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "tiny"
    assert info["parameters"] == 4 * 8 + 8 + 8 * 3
    assert info["ops"] == {"MatMul": 2, "Add": 1, "Relu": 1}
    assert info["flops_estimate"] == 2 * (2 * 4 * 8) + 2 * (2 * 8 * 3) + 2 * 8 * 2  # matmuls + add + relu
    assert info["signature"]["inputs"][0]["shape"] == ["n", 4]

    assert main(["inspect", str(pkg)]) == 0
    assert "parameters 64" in capsys.readouterr().out

    x = np.random.default_rng(0).standard_normal((70, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_path = tmp_path / "out.npz"
    assert main(["predict", str(pkg), str(tmp_path / "x.npy"), "-o", str(out_path), "--batch-size", "16"]) == 0
    with np.load(out_path) as data:
        np.testing.assert_allclose(data["y"], mlp_reference(x), rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "out.npz.partial").exists()


@pytest.mark.parametrize("kind", ["npz", "json", "jsonl", "csv"])
def test_predict_reads_every_input_format(tmp_path, mlp_package, kind):
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    path = tmp_path / f"in.{kind}"
    if kind == "npz":
        np.savez(path, x=x)
    elif kind == "json":
        path.write_text(json.dumps([{"x": row.tolist()} for row in x]))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(row.tolist()) for row in x))
    else:
        path.write_text("a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(mlp_package.root), str(path), "-o", str(out), "--backend", "onnxruntime"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5
    got = np.array([r["outputs"]["y"] for r in records], np.float32)
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-4)


def test_predict_images_through_preprocessing_to_jsonl(tmp_path):
    from ferry.cli._options import DEMO_ROOT

    out = tmp_path / "digits.jsonl"
    samples = DEMO_ROOT / "samples"
    assert main(["predict", str(DEMO_ROOT / "digits"), str(samples), "-o", str(out), "--batch-size", "4"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 20
    assert all(len(r["top"]) == 3 for r in records)
    right = sum(r["top"][0]["label"] == r["sample"][0] for r in records)
    assert right >= 18


def test_errors_are_one_line_and_exit_nonzero(tmp_path, mlp_package):
    np.save(tmp_path / "bad.npy", np.ones((3, 4), np.float64))
    result = run_cli("predict", str(mlp_package.root), str(tmp_path / "bad.npy"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        "error: model 'mlp', input 'x': expected dtype float32, got float64 "
        "(ferry never casts silently; convert with .astype(np.float32))"
    )
    assert sum(line.startswith("error:") for line in lines) == 1
    assert "Traceback" not in result.stderr

    (mlp_package.root / "model.onnx").write_bytes(b"tampered")
    result = run_cli("inspect", str(mlp_package.root))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "size is 8 bytes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_resumes_after_an_interruption(tmp_path, mlp_package):
    x = np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    predictor = ferry.create_predictor(ferry.Config(mlp_package))
    calls = []
    real_predict = predictor.predict

    def counting(feeds, outputs=None):
        calls.append(len(feeds["x"]))
        return real_predict(feeds, outputs)

    predictor.predict = counting
    samples = read_inputs([tmp_path / "x.npy"], mlp_package)

    def interrupt(index: int) -> None:
        if index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(BatchJob(predictor, samples, 10, out), on_batch=interrupt)
    assert not out.exists()  # nothing half-written in place of the result
    assert len(list((tmp_path / "out.npz.partial").glob("batch-*.npz"))) == 3
    calls.clear()
    run_job(BatchJob(predictor, samples, 10, out))
    assert calls == [10, 10]  # only batches 3 and 4 ran again
    with np.load(out) as data:
        np.testing.assert_allclose(data["y"], mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_resume_is_not_fooled_by_different_inputs(tmp_path, mlp_package):
    out = tmp_path / "out.npz"
    predictor = ferry.create_predictor(ferry.Config(mlp_package))
    np.save(tmp_path / "a.npy", np.ones((20, 4), np.float32))
    samples = read_inputs([tmp_path / "a.npy"], mlp_package)
    with pytest.raises(KeyboardInterrupt):
        run_job(BatchJob(predictor, samples, 10, out), on_batch=lambda i: (_ for _ in ()).throw(KeyboardInterrupt))
    # A different batch size means different batches: the partial results must not be reused.
    run_job(BatchJob(predictor, samples, 7, out))
    with np.load(out) as data:
        assert data["y"].shape == (20, 3)


def test_bench_measures_writes_html_and_tunes(tmp_path, mlp_package, capsys):
    html = tmp_path / "report.html"
    args = ["bench", str(mlp_package.root), "--batch", "1,4", "--threads", "1", "--runs", "5", "--warmup", "1"]
    assert main([*args, "--min-seconds", "0", "--html", str(html), "--tune"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "openvino" in out
    assert "lite (the numpy engine for devices) is not in 'all'" in out  # said, not skipped silently
    page = html.read_text()
    assert page.count('data-plot="throughput"') == 1 and page.count('data-plot="latency"') == 2  # batch 1 and 4
    assert "p99 ms" in page and "Recommended setting per batch size" in page
    record = ferry.load(mlp_package.root).manifest.tuning["fp32"]
    assert set(record["fastest"]) == {"1", "4"}
    engines = {m["backend"] for m in record["measured"]}
    assert set(record["fastest"].values()) <= engines <= {"onnxruntime", "openvino", "ncnn", "mnn"}
    assert len(record["measured"]) == 2 * len(engines)
    config = ferry.Config(mlp_package.root)
    predictor = ferry.create_predictor(config)  # backend auto reads the record
    assert any(name in predictor.backend for name in record["fastest"].values())


def test_bench_unknown_backend(mlp_package):
    result = run_cli("bench", str(mlp_package.root), "--backend", "tensorrt")
    assert result.returncode == 1
    assert "not installed" in result.stderr


def test_usage_errors(tmp_path):
    result = run_cli("predict")
    assert result.returncode == 2
    assert "give a package" in result.stderr


def test_resume_key_covers_the_data_itself(tmp_path, mlp_package, capsys):
    """Same file name, same row count, same batch size, new contents: nothing stale may come back."""
    np.save(tmp_path / "x.npy", np.zeros((40, 4), np.float32))
    samples = read_inputs([tmp_path / "x.npy"], mlp_package)
    predictor = ferry.create_predictor(ferry.Config(mlp_package))
    out = tmp_path / "out.npz"

    def interrupt(index: int) -> None:
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(BatchJob(predictor, samples, 10, out), on_batch=interrupt)
    fresh = np.random.default_rng(4).standard_normal((40, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", fresh)
    assert main(["predict", str(mlp_package.root), str(tmp_path / "x.npy"), "-o", str(out), "--batch-size", "10"]) == 0
    assert "starting over (the model, the input data or the batch size changed)" in capsys.readouterr().err
    with np.load(out) as data:
        np.testing.assert_allclose(data["y"], mlp_reference(fresh), rtol=1e-5, atol=1e-5)


def test_outputs_on_a_full_disk_leave_the_old_file_and_no_temporaries(small_disk, mlp_package, tmp_path):
    out = small_disk / "out.jsonl"
    out.write_text("the previous good result\n")
    np.save(tmp_path / "x.npy", np.ones((4000, 4), np.float32))  # about 600 KB of JSON lines: more than fits
    assert main(["predict", str(mlp_package.root), str(tmp_path / "x.npy"), "-o", str(out)]) != 0
    assert out.read_text() == "the previous good result\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["out.jsonl", "out.jsonl.partial"]
    assert not [p for p in (small_disk / "out.jsonl.partial").iterdir() if p.name.endswith(".tmp")]


def test_export_lite_on_a_full_disk_keeps_the_previous_model(small_disk, tmp_path):
    from ferry.demo import __path__ as _  # noqa: F401  (the demo package ships the digits model)

    digits = Path(ferry.__file__).parent / "demo" / "digits"
    target = small_disk / "digits.flite"
    target.write_bytes(b"previous model")
    (small_disk / "filler").write_bytes(b"\0" * (200 << 10))  # leaves less room than the model needs
    assert main(["export", "lite", str(digits), "-o", str(target)]) != 0
    assert target.read_bytes() == b"previous model"
    assert sorted(p.name for p in small_disk.iterdir()) == ["digits.flite", "filler"]


def test_predict_casts_only_when_asked_and_says_so(tmp_path, mlp_package, capsys):
    x = np.random.default_rng(1).standard_normal((5, 4))  # float64, numpy's default
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(mlp_package.root), str(tmp_path / "x.npy")]) != 0
    assert "expected dtype float32, got float64" in capsys.readouterr().err
    out = tmp_path / "out.npz"
    assert main(["predict", str(mlp_package.root), str(tmp_path / "x.npy"), "--cast", "float32", "-o", str(out)]) == 0
    assert "cast input 'x' from float64 to float32" in capsys.readouterr().err
    with np.load(out) as data:
        np.testing.assert_allclose(data["y"], mlp_reference(x.astype(np.float32)), rtol=1e-5, atol=1e-5)


def test_predict_without_output_says_what_it_left_out(tmp_path, mlp_package, capsys):
    np.save(tmp_path / "x.npy", np.ones((143, 4), np.float32))
    assert main(["predict", str(mlp_package.root), str(tmp_path / "x.npy")]) == 0
    assert "showing 50 of 143 samples" in capsys.readouterr().out


def test_an_interrupted_predict_says_that_a_rerun_resumes(tmp_path):
    import signal
    import time

    from serving_helpers import slow_model

    pkg = ferry.save(slow_model(rounds=400), tmp_path / "slow", name="slow")
    np.save(tmp_path / "x.npy", np.ones((64, 1024), np.float32))
    out = tmp_path / "out.npz"
    cmd = [sys.executable, "-m", "ferry", "predict", str(pkg.root), str(tmp_path / "x.npy"), "-o", str(out),
           "--batch-size", "1"]  # fmt: skip
    proc = interruptible(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.npz.partial"
    deadline = time.monotonic() + 60
    while not (partial.is_dir() and len(list(partial.glob("batch-*.npz"))) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and not out.exists()
    assert "run the same command again to resume" in err


def test_weights_kept_in_constant_nodes_count_as_parameters():
    """paddle2onnx and PP-OCR's files keep weights in Constant nodes; a shape constant is not a parameter."""
    from onnx import TensorProto, helper, numpy_helper

    from ferry.stats import parameter_count

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([3], np.int64), "s")
    nodes = [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "s"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])  # fmt: skip
    assert parameter_count(helper.make_model(graph)) == 12
