"""`ferry serve` end to end: a real server process, called with unmodified tritonclient (HTTP and gRPC)
and raw HTTP. Batching, repository control, errors, limits, auth, queue policy and graceful stop."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import ferry
from ferry.serving.http_app import infer_path
from serving_helpers import W, get, infer_body, linear_model, make_repository, post, running_server, sigterm_during

tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_repository(tmp_path_factory.mktemp("repo"))
    (root / "linear" / "config.json").write_text(json.dumps({"version_policy": {"all": True}}))
    return root


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo, "--batch-delay-ms", "20", "--max-batch-size", "16") as s:
        yield s


def x_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


# --- tritonclient, both protocols -----------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_infer(server, binary):
    client = tritonhttp.InferenceServerClient(server.http)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("linear") and client.is_model_ready("linear", "1")
    meta = client.get_model_metadata("linear")
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    x = x_batch(5)
    inp = tritonhttp.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = tritonhttp.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("linear", [inp], outputs=[out])
    np.testing.assert_allclose(result.as_numpy("y"), x @ W * 2, rtol=1e-5)  # latest version: weights doubled
    result = client.infer("linear", [inp], model_version="1", outputs=[out])
    np.testing.assert_allclose(result.as_numpy("y"), x @ W, rtol=1e-5)
    assert client.get_server_metadata()["name"] == "ferry"


def test_tritonclient_grpc_infer(server):
    client = tritongrpc.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("linear", "2")
    meta = client.get_model_metadata("linear", as_json=True)
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["shape"] == ["-1", "4"]
    x = x_batch(3, seed=1)
    inp = tritongrpc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("linear", [inp], model_version="1")
    np.testing.assert_allclose(result.as_numpy("y"), x @ W, rtol=1e-5)
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m.get("version"), m.get("state")) for m in index} >= {
        ("linear", "1", "READY"),
        ("slow", "1", "READY"),
    }


def test_grpc_errors_have_the_right_codes(server):
    client = tritongrpc.InferenceServerClient(server.grpc)
    x = x_batch(1)
    inp = tritongrpc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [inp])
    assert "NOT_FOUND" in str(err.value.status())
    bad = tritongrpc.InferInput("x", [1, 4], "FP64")
    bad.set_data_from_numpy(x.astype(np.float64))
    with pytest.raises(InferenceServerException) as err:
        client.infer("linear", [bad])
    assert "INVALID_ARGUMENT" in str(err.value.status())
    assert "expected dtype float32, got float64" in err.value.message()


# --- batching -------------------------------------------------------------------------------------


def test_concurrent_requests_are_merged_and_split_back(server):
    def metric(text: str, name: str) -> float:
        pattern = rf'^{name}\{{model="linear",version="2"\}} ([0-9.e+]+)$'
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else 0.0

    before = get(server, "/metrics")[1].decode()
    inputs = [x_batch(1 + i % 3, seed=i) for i in range(16)]

    def call(x: np.ndarray) -> np.ndarray:
        client = tritonhttp.InferenceServerClient(server.http)
        inp = tritonhttp.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("linear", [inp]).as_numpy("y")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, inputs))
    for x, y in zip(inputs, results):
        np.testing.assert_allclose(y, x @ W * 2, rtol=1e-5)  # each caller gets its own rows back
    after = get(server, "/metrics")[1].decode()
    runs = metric(after, "ferry_batch_rows_count") - metric(before, "ferry_batch_rows_count")
    rows = metric(after, "ferry_batch_rows_sum") - metric(before, "ferry_batch_rows_sum")
    assert rows == sum(len(x) for x in inputs)
    assert runs < len(inputs)  # requests really were merged into fewer engine runs


# --- raw HTTP: errors and formats -----------------------------------------------------------------


def test_binary_request_with_raw_http(server):
    x = x_batch(2)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = post(
        server, "/v2/models/linear/versions/1/infer", header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    assert status == 200
    json_len = int(headers["inference-header-content-length"])
    meta = json.loads(body[:json_len])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 3 * 4
    y = np.frombuffer(body[json_len:], np.float32).reshape(2, 3)
    np.testing.assert_allclose(y, x @ W, rtol=1e-5)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/v2/models/nope/infer", infer_body(x_batch(1)), {}, 404, "unknown model 'nope'"),
        ("/v2/models/linear/versions/7/infer", infer_body(x_batch(1)), {}, 404, "no version '7'"),
        ("/v2/models/linear/infer", b"{not json", {}, 400, "not valid JSON"),
        ("/v2/models/linear/infer", b"[]", {}, 400, "must be a JSON object"),
        ("/v2/models/linear/infer", infer_body(x_batch(1), name="z"), {}, 400, "unknown input(s) ['z']"),
        (
            "/v2/models/linear/infer",
            infer_body(x_batch(1), datatype="FP64"),
            {},
            400,
            "expected dtype float32, got float64",
        ),
        ("/v2/models/linear/infer", infer_body(x_batch(1), datatype="FP99"), {}, 400, "unknown datatype 'FP99'"),
        (
            "/v2/models/linear/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 7}]}).encode(),
            {},
            400,
            "needs 8 elements, the data has 7",
        ),
        (
            "/v2/models/linear/infer",
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
            ).encode()
            + b"\x00" * 8,
            {"Inference-Header-Content-Length": "85"},
            400,
            "",
        ),
        (
            "/v2/models/linear/infer",
            infer_body(x_batch(1)),
            {"Inference-Header-Content-Length": "abc"},
            400,
            "must be a number",
        ),
        ("/v2/models/linear/infer", infer_body(np.ones((1, 5), np.float32)), {}, 400, "axis 1 must be 4"),
        ("/v2/models//infer", infer_body(x_batch(1)), {}, 404, "no such endpoint: /v2/models//infer"),
        ("/v2/models/linear/versions//infer", infer_body(x_batch(1)), {}, 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, path, body, headers, status, message):
    got, _, data = post(server, path, body, headers)
    assert got == status, data
    assert message in json.loads(data)["error"]


def test_infer_is_post_only(server):
    status, data = get(server, "/v2/models/linear/infer")
    assert status == 405
    assert json.loads(data) == {"error": "GET is not allowed here"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v2/models/m/infer", {"model": "m"}),
        ("/v2/models/m/versions/3/infer", {"model": "m", "version": "3"}),
        ("/v2/models/m", None),
        ("/v2/models//infer", None),
        ("/v2/models/m/versions//infer", None),
        ("/v2/models/m/infer/", None),
        ("/v1/models/m/infer", None),
        ("/v2/models/m/ready", None),
    ],
)
def test_infer_path_is_matched_exactly(path, params):
    assert infer_path(path) == params


def test_body_limit(repo):
    with running_server(repo, "--max-body-mb", "0.01") as s:
        status, _, data = post(s, "/v2/models/linear/infer", infer_body(np.ones((2000, 4), np.float32)))
        assert status == 413
        assert "limit" in json.loads(data)["error"]
        assert post(s, "/v2/models/linear/infer", infer_body(x_batch(1)))[0] == 200


# --- auth, control, queue policy, shutdown -------------------------------------------------------


def test_api_key(repo):
    with running_server(repo, "--api-key", "s3cret") as s:
        assert get(s, "/v2/health/ready")[0] == 200  # health stays open
        assert post(s, "/v2/models/linear/infer", infer_body(x_batch(1)))[0] == 401
        assert post(s, "/v2/models/linear/infer", infer_body(x_batch(1)), {"X-API-Key": "wrong"})[0] == 401
        assert post(s, "/v2/models/linear/infer", infer_body(x_batch(1)), {"Authorization": "Bearer s3cret"})[0] == 200
        client = tritongrpc.InferenceServerClient(s.grpc)
        assert client.is_server_live()
        with pytest.raises(InferenceServerException, match="API key"):
            client.get_model_metadata("linear")
        assert client.get_model_metadata("linear", headers={"x-api-key": "s3cret"}).name == "linear"


def test_explicit_load_unload_and_a_broken_version(tmp_path):
    repo = make_repository(tmp_path)
    with running_server(repo, "--model-control", "explicit") as s:
        client = tritonhttp.InferenceServerClient(s.http)
        client.unload_model("slow")
        assert not client.is_model_ready("slow")
        assert post(s, "/v2/models/slow/infer", infer_body(np.ones((1, 1024), np.float32)))[0] == 503
        client.load_model("slow")
        assert client.is_model_ready("slow")

        # A new version 3 that is corrupt: loading fails, version 2 keeps serving, the index says why.
        bad = ferry.save(linear_model(3.0), repo / "linear" / "3", name="linear", version="3")
        (bad.root / "model.onnx").write_bytes(b"broken")
        with pytest.raises(InferenceServerException):
            client.load_model("linear")
        x = x_batch(2)
        inp = tritonhttp.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_allclose(client.infer("linear", [inp]).as_numpy("y"), x @ W * 2, rtol=1e-5)
        index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
        assert index[("linear", "3")]["state"] == "UNAVAILABLE"
        assert "size is 6 bytes" in index[("linear", "3")]["reason"]
        assert index[("linear", "2")]["state"] == "READY"

        # gRPC repository control too.
        g = tritongrpc.InferenceServerClient(s.grpc)
        g.unload_model("slow")
        assert not g.is_model_ready("slow")
        g.load_model("slow")
        assert g.is_model_ready("slow")


def test_load_is_refused_without_explicit_control(server):
    status, _, data = post(server, "/v2/repository/models/slow/load", b"")
    assert status == 400 and "explicit" in json.loads(data)["error"]


def _slow_calls(s, n: int) -> list[int]:
    body = infer_body(np.ones((1, 1024), np.float32))
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: post(s, "/v2/models/slow/infer", body)[0], range(n)))


def test_full_queue_answers_503_with_retry_after(repo):
    with running_server(repo, "--max-queue", "1", "--max-batch-size", "1") as s:
        statuses = _slow_calls(s, 24)
        assert 503 in statuses and 200 in statuses
        assert set(statuses) <= {200, 503}
        body = infer_body(np.ones((1, 1024), np.float32))
        with ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(lambda _: post(s, "/v2/models/slow/infer", body), range(24)))
        refused = [h for st, h, _ in replies if st == 503]
        assert refused and all(h.get("retry-after") == "1" for h in refused)


def test_requests_past_their_timeout_get_504_and_are_not_run(repo):
    with running_server(repo, "--timeout-ms", "5", "--max-batch-size", "1") as s:
        statuses = _slow_calls(s, 16)
        assert 504 in statuses and 200 in statuses
        text = get(s, "/metrics")[1].decode()
        timeouts = re.search(
            r'ferry_requests_total\{model="slow",outcome="timeout",protocol="http",version="1"\} (\S+)', text
        )
        runs = re.search(r'ferry_batch_rows_count\{model="slow",version="1"\} (\S+)', text)
        assert timeouts and float(timeouts.group(1)) == statuses.count(504)
        assert runs and float(runs.group(1)) == statuses.count(200)  # timed-out requests never ran


def test_sigterm_finishes_requests_in_flight(repo):
    with running_server(repo, "--max-batch-size", "1") as s:
        results, code = sigterm_during(s, calls=6, after=0.05)
        assert code == 0
        assert results == [200] * 6


def test_metrics_count_requests_by_outcome(server):
    post(server, "/v2/models/linear/infer", infer_body(x_batch(1)))
    post(server, "/v2/models/linear/infer", b"{bad")
    text = get(server, "/metrics")[1].decode()
    assert re.search(
        r'ferry_requests_total\{model="linear",outcome="success",protocol="http",version="2"\} [1-9]', text
    )
    assert "ferry_request_seconds_bucket" in text and 'phase="queue"' in text
    assert re.search(r"ferry_models_loaded 3\.0", text)


def test_fuzzed_bodies_never_cause_a_500(server):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
    tensors = st.fixed_dictionaries(
        {"name": st.sampled_from(["x", "y", ""]), "shape": st.lists(st.integers(-1, 5), max_size=3),
         "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "XX"]), "data": json_values}
    )  # fmt: skip
    bodies = st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(tensors, max_size=3).map(lambda ins: json.dumps({"inputs": ins}).encode()),
    )

    @hypothesis.settings(max_examples=150, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(body=bodies)
    def check(body: bytes) -> None:
        status, _, data = post(server, "/v2/models/linear/infer", body)
        assert status in (200, 400), (status, data)
        if status == 400:
            assert json.loads(data)["error"]

    check()


# --- ferry's own client ---------------------------------------------------------------------------


def test_the_client_does_not_import_the_server():
    import subprocess
    import sys

    code = (
        "import sys, ferry.client, ferry.client.grpc, ferry.client.http\n"
        "server = ('ferry.serving', 'prometheus_client', 'starlette', 'uvicorn')\n"
        "print([m for m in sys.modules if m.startswith(server)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_ferry_client_sync(server, scheme):
    from ferry.client import Client
    from ferry.errors import InputError, ModelNotFoundError

    url = f"http://{server.http}" if scheme == "http" else f"grpc://{server.grpc}"
    with Client(url) as client:
        assert client.live() and client.ready() and client.model_ready("linear", "1")
        assert client.metadata("linear")["inputs"][0]["name"] == "x"
        x = x_batch(4, seed=3)
        np.testing.assert_allclose(client.infer("linear", {"x": x})["y"], x @ W * 2, rtol=1e-5)
        np.testing.assert_allclose(client.infer("linear", x, input_name="x", version="1")["y"], x @ W, rtol=1e-5)
        if scheme == "http":
            json_out = client.infer("linear", {"x": x}, binary=False)["y"]
            np.testing.assert_allclose(json_out, x @ W * 2, rtol=1e-5)
        with pytest.raises(ModelNotFoundError):
            client.infer("nope", {"x": x})
        with pytest.raises(InputError, match="expected dtype float32"):
            client.infer("linear", {"x": x.astype(np.float64)})


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_ferry_client_async(server, scheme):
    import asyncio

    from ferry.client import AsyncClient

    url = f"http://{server.http}" if scheme == "http" else f"grpc://{server.grpc}"
    inputs = [x_batch(2, seed=i) for i in range(8)]

    async def main() -> list[np.ndarray]:
        async with AsyncClient(url) as client:
            assert await client.ready()
            results = await asyncio.gather(*(client.infer("linear", {"x": x}) for x in inputs))
            return [r["y"] for r in results]

    for x, y in zip(inputs, asyncio.run(main())):
        np.testing.assert_allclose(y, x @ W * 2, rtol=1e-5)


# --- Paddle Serving's formats, and ferry bench --url ----------------------------------------------


def test_paddle_webservice_feed_fetch(server):
    x = x_batch(3, seed=5)
    body = json.dumps({"feed": [{"x": row.tolist()} for row in x], "fetch": ["y"]}).encode()
    status, _, data = post(server, "/linear/prediction", body)
    assert status == 200
    np.testing.assert_allclose(np.array(json.loads(data)["result"]["y"]), x @ W * 2, rtol=1e-5)
    status, _, data = post(server, "/linear/prediction", json.dumps({"feed": [{"x": [1, 2]}], "fetch": ["y"]}).encode())
    assert status == 400 and "do not fit one sample" in json.loads(data)["result"]


def test_paddle_pipeline_key_value(server):
    x = x_batch(1, seed=6)[0]
    body = json.dumps({"key": ["x"], "value": [", ".join(str(float(v)) for v in x)]}).encode()
    status, _, data = post(server, "/linear/prediction", body)
    doc = json.loads(data)
    assert status == 200 and doc["err_no"] == 0 and doc["key"] == ["y"]
    np.testing.assert_allclose(np.array(json.loads(doc["value"][0])), (x @ W * 2)[None], rtol=1e-5)
    status, _, data = post(server, "/linear/prediction", json.dumps({"key": ["z"], "value": ["1"]}).encode())
    assert status == 400 and json.loads(data)["err_no"] == 5000


def test_bench_url_drives_the_server(server, capsys):
    from ferry.cli import main

    url = f"http://{server.http}"
    assert main(["bench", "--url", url, "--model", "linear", "--seconds", "0.5", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    assert "req/s" in out and "linear" in out


# --- hot reload -------------------------------------------------------------------------------------


def test_what_a_package_records_as_it_runs_does_not_count_as_a_new_model(tmp_path):
    """Tuning and the engines' files (made on first use) change ferry.json, not the model."""
    from ferry.serving.poll import fingerprint

    repo = tmp_path / "repo"
    package = ferry.save(linear_model(1.0), repo / "linear" / "1", name="linear", version="1")
    before = fingerprint(repo / "linear")
    package.save_tuning({"fp32": {"fastest": {"1": "onnxruntime"}}})
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "model.ort").write_bytes(b"ort")
    package.add_engine("ort", tmp_path / "files", {"engine": "ort", "files": ["model.ort"]})
    assert fingerprint(repo / "linear") == before
    ferry.save(linear_model(2.0), repo / "linear" / "1", name="linear", version="1", overwrite=True)
    assert fingerprint(repo / "linear") != before


def test_poll_reload_under_load_loses_no_request(tmp_path):
    repo = tmp_path / "repo"
    ferry.save(linear_model(1.0), repo / "linear" / "1", name="linear", version="1")
    with running_server(repo, "--model-control", "poll", "--poll-interval", "0.2") as s:
        stop = threading.Event()
        failures: list[str] = []
        seen_scales: set[float] = set()
        x = x_batch(2, seed=9)

        def hammer() -> None:
            from ferry.client import Client

            with Client(s.url) as client:
                while not stop.is_set():
                    try:
                        y = client.infer("linear", {"x": x})["y"]
                    except Exception as exc:  # any failure at all fails the test
                        failures.append(repr(exc))
                        continue
                    seen_scales.add(round(float(y[0, 0] / (x @ W)[0, 0]), 3))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        ferry.save(linear_model(2.0), repo / "linear" / "2", name="linear", version="2")  # atomic rename into place
        client = tritonhttp.InferenceServerClient(s.http)
        deadline = time.monotonic() + 20
        while client.get_model_metadata("linear")["versions"] != ["2"] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        # A broken version 3 arrives: it fails to load and version 2 keeps serving.
        bad = ferry.save(linear_model(3.0), repo / "linear" / "3", name="linear", version="3")
        (bad.root / "model.onnx").write_bytes(b"junk")
        deadline = time.monotonic() + 20
        index = {}
        while time.monotonic() < deadline:
            index = {(m["name"], m["version"]): m for m in client.get_model_repository_index()}
            if ("linear", "3") in index:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert seen_scales == {1.0, 2.0}  # served version 1, then version 2, and never version 3
        assert client.get_model_metadata("linear")["versions"] == ["2"]
        assert index[("linear", "3")]["state"] == "UNAVAILABLE"


def test_workers_share_the_port_and_metrics_port(repo):
    from serving_helpers import free_port

    metrics_port = free_port()
    with running_server(repo, "--workers", "2", "--metrics-port", str(metrics_port)) as s:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            status, headers, _ = post(s, "/v2/models/linear/infer", infer_body(x_batch(1)))  # a new connection each
            assert status == 200
            pids.add(headers["x-ferry-worker"])
        assert len(pids) == 2
        conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
        conn.request("GET", "/metrics")
        assert "ferry_requests_total" in conn.getresponse().read().decode()


def wait_for_gauge(server, name: str, value: float, timeout: float = 20.0) -> None:
    """Until the server's /metrics shows `name` at `value`: the server's own word, not a sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(rf"^{name} (\S+)$", get(server, "/metrics")[1].decode(), re.M)
        if found and float(found.group(1)) == value:
            return
        time.sleep(0.005)
    raise AssertionError(f"{name} never reached {value}")


def test_a_client_that_disconnects_has_its_queued_work_cancelled(tmp_path):
    import socket

    from serving_helpers import slow_model

    pkg = ferry.save(slow_model(rounds=2000), tmp_path / "veryslow", name="veryslow")
    with running_server(pkg.root, "--max-batch-size", "1") as s:
        body = infer_body(np.ones((1, 1024), np.float32))
        request = (
            f"POST /v2/models/veryslow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        blocker = threading.Thread(target=lambda: post(s, "/v2/models/veryslow/infer", body))
        blocker.start()
        wait_for_gauge(s, "ferry_in_flight_requests", 1)  # the blocker holds the one worker first
        quitters = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", s.http_port))
            sock.sendall(request)
            quitters.append(sock)
        wait_for_gauge(s, "ferry_in_flight_requests", 4)  # all three queued behind it
        for sock in quitters:
            sock.close()  # gone before their turn
        blocker.join()
        assert post(s, "/v2/models/veryslow/infer", body)[0] == 200
        text = get(s, "/metrics")[1].decode()
        runs = re.search(r'ferry_batch_rows_count\{model="veryslow",version="1"\} (\S+)', text)
        cancelled = re.search(
            r'ferry_requests_total\{model="veryslow",outcome="cancelled",protocol="http",version="1"\} (\S+)', text
        )
        assert runs and float(runs.group(1)) == 2  # the blocker and the last request; the quitters never ran
        assert cancelled and float(cancelled.group(1)) == 3


def test_registry_turns_spinning_off_unless_asked(repo):
    from ferry.serving.batching import BatchPolicy
    from ferry.serving.registry import Registry

    for spinning in (False, True):
        registry = Registry(repo, BatchPolicy(), backend="onnxruntime", spinning=spinning)
        registry.load("linear")
        try:
            assert registry.get("linear").predictor.config.spinning is spinning
        finally:
            registry.close()
