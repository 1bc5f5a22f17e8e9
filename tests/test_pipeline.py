"""Pipelines in the server: raw image bytes in (BYTES tensor, base64 JSON, multipart upload), labels out,
and a user hook class around the model."""

from __future__ import annotations

import base64
import json
import textwrap
import uuid

import numpy as np
import pytest

import ferry
from ferry.cli._options import DEMO_ROOT
from serving_helpers import W, infer_body, linear_model, post, running_server

tritonhttp = pytest.importorskip("tritonclient.http")

SAMPLES = sorted((DEMO_ROOT / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def demo_server():
    with running_server(DEMO_ROOT / "digits") as s:
        yield s


def test_raw_png_bytes_in_labels_out_with_tritonclient(demo_server):
    client = tritonhttp.InferenceServerClient(demo_server.http)
    images = np.array([p.read_bytes() for p in SAMPLES], dtype=object)
    inp = tritonhttp.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(images, binary_data=True)
    outs = [tritonhttp.InferRequestedOutput(n) for n in ("labels", "scores")]
    result = client.infer("digits", [inp], outputs=outs)
    labels = result.as_numpy("labels")
    scores = result.as_numpy("scores")
    assert labels.shape == (20, 3) and scores.shape == (20, 3)
    right = sum(lab[0].decode() == p.name[0] for lab, p in zip(labels, SAMPLES))
    assert right >= 18
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_base64_json_and_bad_base64(demo_server):
    data = [base64.b64encode(p.read_bytes()).decode() for p in SAMPLES[:4]]
    body = {"inputs": [{"name": "image", "shape": [4], "datatype": "BYTES", "data": data,
                        "parameters": {"content_type": "base64"}}]}  # fmt: skip
    status, _, reply = post(demo_server, "/v2/models/digits/infer", json.dumps(body).encode())
    assert status == 200
    outputs = {o["name"]: o for o in json.loads(reply)["outputs"]}
    assert [row for row in np.array(outputs["labels"]["data"]).reshape(4, 3)[:, 0]] == [p.name[0] for p in SAMPLES[:4]]
    body["inputs"][0]["data"] = ["%%%not base64"] * 4
    status, _, reply = post(demo_server, "/v2/models/digits/infer", json.dumps(body).encode())
    assert status == 400 and "not valid base64" in json.loads(reply)["error"]
    body["inputs"][0]["data"] = [base64.b64encode(b"not an image").decode()] * 4
    status, _, reply = post(demo_server, "/v2/models/digits/infer", json.dumps(body).encode())
    assert status == 400 and "could not decode image" in json.loads(reply)["error"]


def test_multipart_upload(demo_server):
    boundary = uuid.uuid4().hex
    parts = []
    for p in SAMPLES[:6]:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{p.name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + p.read_bytes()
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    status, _, reply = post(
        demo_server, "/v2/models/digits/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200, reply
    doc = json.loads(reply)
    assert [pred[0]["label"] for pred in doc["predictions"]] == [p.name[0] for p in SAMPLES[:6]]
    assert all(0 <= item["score"] <= 1 for pred in doc["predictions"] for item in pred)
    status, _, reply = post(
        demo_server, "/v2/models/digits/predict", SAMPLES[0].read_bytes(), {"Content-Type": "image/png"}
    )
    assert status == 200 and json.loads(reply)["predictions"][0][0]["label"] == SAMPLES[0].name[0]


def test_hook_class_wraps_the_model(tmp_path):
    hook = tmp_path / "my_hook.py"
    hook.write_text(
        textwrap.dedent(
            """
            import numpy as np

            class Doubler:
                def preprocess(self, inputs):
                    return {"x": inputs["x"] * 2}

                def postprocess(self, inputs, outputs):
                    return {**outputs, "total": outputs["y"].sum(axis=1, keepdims=True)}
            """
        )
    )
    pkg = ferry.save(linear_model(1.0), tmp_path / "linear", name="linear")
    with running_server(pkg.root, "--hook", f"{hook}:Doubler") as s:
        x = np.ones((2, 4), np.float32)
        status, _, reply = post(s, "/v2/models/linear/infer", infer_body(x))
        assert status == 200
        outputs = {o["name"]: np.array(o["data"]) for o in json.loads(reply)["outputs"]}
        np.testing.assert_allclose(outputs["y"], (2 * x @ W).ravel(), rtol=1e-5)
        np.testing.assert_allclose(outputs["total"], (2 * x @ W).sum(axis=1), rtol=1e-5)


def test_ensemble_chains_two_models(tmp_path):
    repo = tmp_path / "repo"
    ferry.save(linear_model(1.0), repo / "first" / "1", name="first")
    # second: z[batch,3] = y * 3, as a one-node graph
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["y", "k"], ["z"])],
        "second",
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array(3.0, np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ferry.save(model, repo / "second" / "1", name="second")
    (repo / "chain").mkdir()
    (repo / "chain" / "config.json").write_text(
        json.dumps(
            {
                "ensemble": {
                    "inputs": ["features"],
                    "outputs": ["final"],
                    "steps": [
                        {"model": "first", "inputs": {"x": "features"}, "outputs": {"y": "mid"}},
                        {"model": "second", "inputs": {"y": "mid"}, "outputs": {"z": "final"}},
                    ],
                }
            }
        )
    )
    with running_server(repo) as s:
        client = tritonhttp.InferenceServerClient(s.http)
        meta = client.get_model_metadata("chain")
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
        assert meta["outputs"] == [{"name": "final", "datatype": "FP32", "shape": [-1, 3]}]
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        inp = tritonhttp.InferInput("features", [3, 4], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_allclose(client.infer("chain", [inp]).as_numpy("final"), x @ W * 3, rtol=1e-5)
        index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
        assert index["chain"] == "READY"
        bad = tritonhttp.InferInput("x", [3, 4], "FP32")
        bad.set_data_from_numpy(x)
        with pytest.raises(Exception, match="takes \\['features'\\]"):
            client.infer("chain", [bad])


def test_ensemble_config_errors(tmp_path):
    from ferry.errors import ConfigError
    from ferry.serving.ensemble import parse

    with pytest.raises(ConfigError, match="reads \\['nope'\\]"):
        parse(
            "e",
            {
                "inputs": ["x"],
                "outputs": ["y"],
                "steps": [{"model": "m", "inputs": {"a": "nope"}, "outputs": {"b": "y"}}],
            },
            tmp_path,
        )
    with pytest.raises(ConfigError, match="produced by no step"):
        parse(
            "e",
            {"inputs": ["x"], "outputs": ["q"], "steps": [{"model": "m", "inputs": {"a": "x"}, "outputs": {"b": "y"}}]},
            tmp_path,
        )


def test_a_plain_json_string_for_an_image_is_a_400_not_a_crash(demo_server):
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["图像 not an image"]}]}
    status, _, reply = post(demo_server, "/v2/models/digits/infer", json.dumps(body).encode())
    assert status == 400 and "could not decode image" in json.loads(reply)["error"]
