"""`ferry serve` against clients that misbehave on purpose: every request they can make gets a 4xx (or
INVALID_ARGUMENT), nothing is cast or invented, memory stays bounded, and one broken model stays alone."""

from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path

import grpc
import numpy as np
import pytest

import ferry
from ferry.protocol.messages import METHODS, SERVICE, messages
from serving_helpers import (
    get,
    infer_body,
    linear_model,
    log_model,
    post,
    running_server,
    text_model,
)

FUZZ_EXAMPLES = int(os.environ.get("FERRY_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    ferry.save(linear_model(), root / "linear" / "1", name="linear", version="1")
    ferry.save(text_model(), root / "text" / "1", name="text", version="1")
    ferry.save(log_model(), root / "log" / "1", name="log", version="1")
    return root


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo, "--max-body-mb", "4") as s:
        yield s


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def grpc_call(server, method: str, message):
    channel = grpc.insecure_channel(server.grpc)
    req_cls, resp_cls = (getattr(messages(), n) for n in METHODS[method])
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}", request_serializer=req_cls.SerializeToString, response_deserializer=resp_cls.FromString
    )
    try:
        return stub(message, timeout=30)
    finally:
        channel.close()


def strict_json(data: bytes):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


# --- memory is bounded before it is spent --------------------------------------------------------


def test_a_huge_declared_bytes_shape_costs_no_memory(server):
    header = json.dumps(
        {"inputs": [{"name": "t", "shape": [2**28], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}
    ).encode()
    body = header + (5).to_bytes(4, "little") + b"hello"
    before = peak_rss_mb(server.process.pid)
    status, _, data = post(server, "/v2/models/text/infer", body, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "BYTES elements" in strict_json(data)["error"]
    m = messages()
    req = m.ModelInferRequest(model_name="text")
    req.inputs.add(name="t", datatype="BYTES", shape=[2**28])
    req.raw_input_contents.append((5).to_bytes(4, "little") + b"hello")
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(server, "ModelInfer", req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert peak_rss_mb(server.process.pid) - before < 100  # 2**28 slots would be 2 GiB


def test_multipart_uploads_count_against_the_body_limit(server):
    boundary = "b0undary"
    part = b"x" * (3 << 20)
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="{i}.png"\r\n\r\n'.encode()
            + part
            + b"\r\n"
            for i in range(4)
        )
        + f"--{boundary}--\r\n".encode()
    )
    status, _, data = post(
        server, "/v2/models/linear/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 413, data


def test_metrics_label_only_models_that_exist(server):
    for i in range(50):
        post(server, f"/v2/models/nosuch{i}/infer", infer_body(np.ones((1, 4), np.float32)))
    text = get(server, "/metrics")[1].decode()
    assert "nosuch" not in text
    found = re.search(
        r'ferry_requests_total\{model="\(unknown\)",outcome="not_found",protocol="http",version=""\} (\S+)', text
    )
    assert found and float(found.group(1)) >= 50


# --- decoding is strict ---------------------------------------------------------------------------


def tensor_body(data, datatype: str = "FP32", shape=None, name: str = "x") -> bytes:
    count = len(data) if isinstance(data, list) else 1
    return json.dumps(
        {"inputs": [{"name": name, "shape": shape or [1, count], "datatype": datatype, "data": data}]}
    ).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        (tensor_body(["4", 1, 2, 3]), "element 0 is '4' (str)"),
        (tensor_body([True, 1, 2, 3]), "element 0 is True (bool)"),
        (tensor_body([None, 1, 2, 3]), "element 0 is None"),
        (tensor_body([1e300, 1, 2, 3]), "element 0 is 1e+300"),
        (b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[NaN,1,2,3]}]}', "NaN is not a JSON number"),
        (tensor_body([1.0] * 100 + [2.9] + [1.0] * 99, "INT32", [50, 4]), "element 100 is 2.9"),
    ],
)
def test_json_values_are_never_cast(server, body, message):
    status, _, data = post(server, "/v2/models/linear/infer", body)
    assert status == 400
    assert message in strict_json(data)["error"]


def test_nan_and_infinity_outputs_are_valid_json_that_tritonclient_reads(server):
    x = np.array([[-1.0, 0.0, np.inf, 1.0]], np.float32)
    status, _, data = post(server, "/v2/models/log/infer", tensor_body([-1.0, 0.0, 1e30, 1.0]))
    assert status == 200
    assert strict_json(data)["outputs"][0]["data"][:2] == ["NaN", "-Infinity"]
    client = tritonhttp.InferenceServerClient(server.http)
    inp = tritonhttp.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    got = client.infer("log", [inp], outputs=[tritonhttp.InferRequestedOutput("y", binary_data=False)])
    y = got.as_numpy("y")
    assert y.dtype == np.float32 and math.isnan(y[0, 0]) and y[0, 1] == -np.inf and y[0, 2] == np.inf
    assert y[0, 3] == 0.0


@pytest.mark.parametrize("protocol", ["http-binary", "http-json", "http-base64", "grpc"])
def test_bytes_in_equal_bytes_out(server, protocol):
    sent = np.array([b"hello", "h\u00e9llo w\u00f6rld".encode()], dtype=object)
    if protocol == "grpc":
        client = tritongrpc.InferenceServerClient(server.grpc)
        inp = tritongrpc.InferInput("t", [2], "BYTES")
        inp.set_data_from_numpy(sent)
        got = client.infer("text", [inp]).as_numpy("echo")
    elif protocol == "http-base64":
        doc = {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"content_type": "base64"},
                           "data": [base64.b64encode(x).decode() for x in sent]}]}  # fmt: skip
        status, _, data = post(server, "/v2/models/text/infer", json.dumps(doc).encode())
        assert status == 200, data
        got = np.array([x.encode() for x in strict_json(data)["outputs"][0]["data"]], dtype=object)
    else:
        client = tritonhttp.InferenceServerClient(server.http)
        inp = tritonhttp.InferInput("t", [2], "BYTES")
        inp.set_data_from_numpy(sent, binary_data=protocol == "http-binary")
        got = client.infer("text", [inp]).as_numpy("echo")
    assert list(got) == list(sent)


def test_text_that_is_not_utf8_is_a_clear_400(server):
    client = tritonhttp.InferenceServerClient(server.http)
    inp = tritonhttp.InferInput("t", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object), binary_data=True)
    with pytest.raises(Exception, match="not UTF-8 text"):
        client.infer("text", [inp])


def test_grpc_refuses_an_input_given_twice(server):
    req = messages().ModelInferRequest(model_name="linear")
    for _ in range(2):
        req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        req.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(server, "ModelInfer", req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "given twice" in info.value.details()


# --- client errors are 4xx, never 500 or UNKNOWN ----------------------------------------------------

DEEP = b'{"inputs":' + b"[" * 1000 + b"]" * 1000 + b"}"
CASES = [
    ("/v2/models/linear/infer", DEEP, {}, 400),
    ("/v2/models/linear/infer", tensor_body([1.0], shape=[2**63]), {}, 400),
    ("/v2/models/linear/infer", tensor_body([1.0], shape=[1] * 70), {}, 400),
    ("/v2/models/linear/infer", tensor_body([1.0] * 4), {"Inference-Header-Content-Length": "\u00b2"}, 400),
    ("/v2/models/linear/infer", tensor_body([1.0] * 4), {"Inference-Header-Content-Length": "abc"}, 400),
    ("/v2/models/linear/predict", b"--x\r\n\r\n", {"Content-Type": "multipart/form-data"}, 400),
    ("/linear/prediction", json.dumps({"key": [["x"]], "value": ["1,2,3,4"]}).encode(), {}, 400),
    ("/linear/prediction", json.dumps({"feed": [{"x": None}], "fetch": ["y"]}).encode(), {}, 400),
    ("/linear/prediction", json.dumps({"feed": [{"x": [1, 2, 3, None]}], "fetch": ["y"]}).encode(), {}, 400),
    ("/linear/prediction", json.dumps({"key": ["x"], "value": ["1,2,nan,4"]}).encode(), {}, 400),
    ("/v2/models/linear/traffic", b'{"split": {"1": Infinity}}', {"Content-Type": "application/json"}, 400),
    ("/v2/models/linear/traffic", b'{"split": {"1": 1e999}}', {"Content-Type": "application/json"}, 400),
    ("/v2/repository/index", b"[1]", {}, 400),
]


@pytest.mark.parametrize("path, body, headers, status", CASES)
def test_malformed_requests_are_client_errors(server, path, body, headers, status):
    got, _, data = post(server, path, body, headers)
    assert got == status, data
    assert strict_json(data)
    assert get(server, "/v2/models/linear/traffic")[0] == 200  # nothing bad was stored


@pytest.mark.parametrize(
    "datatype, field, values",
    [("INT8", "int_contents", [300]), ("UINT8", "uint_contents", [256]), ("INT16", "int_contents", [-40000])],
)
def test_grpc_typed_contents_out_of_range(server, datatype, field, values):
    req = messages().ModelInferRequest(model_name="linear")
    tensor = req.inputs.add(name="x", datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, field).extend(values)
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(server, "ModelInfer", req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "within its range" in info.value.details()


def test_fuzzed_requests_on_every_protocol_are_never_a_500(server):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    values = st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
    dims = st.lists(st.one_of(st.integers(-1, 5), st.just(2**62), st.just(2**31)), max_size=4)
    datatypes = st.sampled_from(["FP32", "INT64", "INT8", "BYTES", "BOOL", "FP16", "XX"])
    tensors = st.fixed_dictionaries({"name": st.sampled_from(["x", "t", ""]), "shape": dims, "datatype": datatypes,
                                     "data": values})  # fmt: skip
    raw = st.binary(max_size=48)
    http_bodies = st.one_of(
        raw,
        values.map(lambda v: json.dumps(v).encode()),
        st.lists(tensors, max_size=3).map(lambda ins: json.dumps({"inputs": ins}).encode()),
    )
    binary = st.tuples(st.lists(tensors, min_size=1, max_size=2), raw)
    paddle = st.one_of(
        st.fixed_dictionaries(
            {"feed": st.lists(st.dictionaries(st.sampled_from(["x", "y"]), values), max_size=3), "fetch": values}
        ),  # fmt: skip
        st.fixed_dictionaries({"key": values, "value": values}),
    )
    grpc_tensors = st.tuples(
        st.sampled_from(["x", "t"]), datatypes, st.lists(st.integers(0, 2**62), max_size=3), st.lists(raw, max_size=2),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
    )  # fmt: skip
    channel = grpc.insecure_channel(server.grpc)
    req_cls, resp_cls = (getattr(messages(), n) for n in METHODS["ModelInfer"])
    infer = channel.unary_unary(f"/{SERVICE}/ModelInfer", req_cls.SerializeToString, resp_cls.FromString)

    def send_binary(case) -> tuple[int, bytes]:
        ins, tail = case
        for t in ins:
            t["parameters"] = {"binary_data_size": len(tail) // len(ins)}
            t.pop("data")
        header = json.dumps({"inputs": ins}).encode()
        status, _, data = post(server, "/v2/models/linear/infer", header + tail,
                               {"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
        return status, data

    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(
        case=st.one_of(
            http_bodies.map(lambda b: ("json", b)), binary.map(lambda b: ("binary", b)),
            paddle.map(lambda d: ("paddle", d)), st.lists(grpc_tensors, max_size=2).map(lambda g: ("grpc", g)),
        )
    )  # fmt: skip
    def check(case) -> None:
        kind, payload = case
        if kind == "grpc":
            req = req_cls(model_name="linear")
            for name, datatype, shape, contents, ints in payload:
                tensor = req.inputs.add(name=name, datatype=datatype, shape=shape)
                if contents:
                    req.raw_input_contents.extend(contents[:1])
                else:
                    tensor.contents.int_contents.extend(ints)
            try:
                infer(req, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED
                ), (exc.code(), exc.details())  # fmt: skip
            return
        if kind == "binary":
            status, data = send_binary(payload)
        elif kind == "paddle":
            status, _, data = post(server, "/linear/prediction", json.dumps(payload).encode())
        else:
            status, _, data = post(server, "/v2/models/linear/infer", payload)
        assert status in (200, 400, 404, 413), (status, data)
        strict_json(data)

    try:
        check()
    finally:
        channel.close()


# --- images are decoded under a pixel limit, inside admission control ------------------------------


@pytest.fixture(scope="module")
def digits_server():
    from ferry.cli._options import DEMO_ROOT

    with running_server(DEMO_ROOT / "digits", "--max-queue", "2", "--max-image-pixels", "20") as s:
        yield s


def png(width: int, height: int, noise: bool = False) -> bytes:
    import io

    from PIL import Image

    if noise:
        pixels = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
        image = Image.fromarray(pixels, "L")
    else:
        image = Image.new("L", (width, height), 200)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(digits_server):
    big = png(12000, 12000)  # a few hundred KB on the wire, 144 MP decoded
    before = peak_rss_mb(digits_server.process.pid)
    status, _, data = post(digits_server, "/v2/models/digits/predict", big, {"Content-Type": "image/png"})
    assert status == 400 and "144.0 MP, over the limit of 20.0 MP" in strict_json(data)["error"]
    assert peak_rss_mb(digits_server.process.pid) - before < 60


def test_image_decoding_counts_against_the_queue_limit(digits_server):
    from concurrent.futures import ThreadPoolExecutor

    image = png(4000, 4000, noise=True)  # 16 MP: under the limit, a fraction of a second to decode

    def upload(_):
        return post(digits_server, "/v2/models/digits/predict", image, {"Content-Type": "image/png"})[0]

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(upload, range(12)))
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
