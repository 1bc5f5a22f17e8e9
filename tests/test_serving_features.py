"""What Triton and KServe users reach for in their first week, with the unmodified tritonclient: statistics
and model configuration endpoints, warm-up before ready, and the response cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ferry
from serving_helpers import W, get, infer_body, linear_model, post, running_server

tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    ferry.save(linear_model(), root / "linear" / "1", name="linear", version="1")
    config = {"max_batch_size": 16, "batch_delay_ms": 2, "warmup": {"batch_sizes": [1, 4], "runs": 2}}
    (root / "linear" / "config.json").write_text(json.dumps(config))
    ferry.save(linear_model(3.0), root / "cached" / "1", name="cached", version="1")
    (root / "cached" / "config.json").write_text(json.dumps({"response_cache": {"enable": True, "max_bytes": 4096}}))
    return root


@pytest.fixture(scope="module")
def server(repo):
    with running_server(repo) as s:
        yield s


def x_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_statistics_count_requests_batches_and_times(server, protocol):
    lib = tritonhttp if protocol == "http" else tritongrpc
    client = lib.InferenceServerClient(server.http if protocol == "http" else server.grpc)

    def stats() -> dict:
        got = client.get_inference_statistics("linear")
        return got if protocol == "http" else json_of(got)

    before = stats()["model_stats"][0]
    for n in (1, 3, 2):
        inp = lib.InferInput("x", [n, 4], "FP32")
        inp.set_data_from_numpy(x_batch(n))
        client.infer("linear", [inp])
    after = stats()["model_stats"][0]
    assert after["name"] == "linear" and after["version"] == "1"
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 6  # rows, as Triton counts
    success = after["inference_stats"]["success"]
    assert int(success["count"]) - int(before["inference_stats"]["success"].get("count", 0)) == 3
    assert int(success["ns"]) > 0 and int(after["inference_stats"]["queue"]["count"]) >= 3
    assert int(after["execution_count"]) >= 1 and after["batch_stats"]
    assert int(after["last_inference"]) > 0
    every = client.get_inference_statistics()
    names = {m["name"] for m in (every if protocol == "http" else json_of(every))["model_stats"]}
    assert names == {"linear", "cached"}


def json_of(message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_config_in_tritons_shape(server, protocol):
    if protocol == "http":
        config = tritonhttp.InferenceServerClient(server.http).get_model_config("linear")
    else:
        config = json_of(tritongrpc.InferenceServerClient(server.grpc).get_model_config("linear").config)
    assert config["name"] == "linear" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4] if protocol == "http" else ["4"]}]
    assert config["output"][0]["name"] == "y" and config["output"][0]["data_type"] == "TYPE_FP32"
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


def test_warm_up_runs_before_the_version_is_ready(repo, tmp_path):
    """The log says it ran with the configured batch sizes, and no statistic counts it."""
    with running_server(repo, "--model-control", "explicit") as s:
        s.process.terminate()
        log = s.process.communicate(timeout=30)[1].decode()
    assert "warmed up linear version 1" in log and "batch sizes [1, 4], 2 run(s) each" in log
    assert "warmed up cached version 1" in log  # the default: one run at batch 1


def test_a_warm_up_that_fails_keeps_the_version_out(tmp_path):
    ferry.save(linear_model(), tmp_path / "m" / "1", name="m", version="1")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"warmup": {"batch_sizes": [0]}}))
    ferry.save(linear_model(), tmp_path / "ok" / "1", name="ok", version="1")
    with running_server(tmp_path) as s:
        index = {r["name"]: r for r in json.loads(post(s, "/v2/repository/index", b"{}")[2])}
        assert index["m"]["state"] == "UNAVAILABLE" and "warmup needs batch_sizes" in index["m"]["reason"]
        assert post(s, "/v2/models/ok/infer", infer_body(x_batch(1)))[0] == 200


def test_the_response_cache_answers_repeats_exactly(server):
    x = x_batch(2, seed=9)
    answers = [json.loads(post(server, "/v2/models/cached/infer", infer_body(x))[2]) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    np.testing.assert_allclose(np.array(answers[0]["outputs"][0]["data"]).reshape(2, 3), x @ W * 3, rtol=1e-5)
    other = json.loads(post(server, "/v2/models/cached/infer", infer_body(x_batch(2, seed=10)))[2])
    assert other != answers[0]  # a different input is never answered from the cache
    stats = json.loads(get(server, "/v2/models/cached/stats")[1])["model_stats"][0]["inference_stats"]
    assert stats["cache_hit"]["count"] == 2 and stats["cache_miss"]["count"] == 2
    text = get(server, "/metrics")[1].decode()
    assert 'ferry_response_cache_total{model="cached",result="hit",version="1"} 2.0' in text
    config = tritonhttp.InferenceServerClient(server.http).get_model_config("cached")
    assert config["response_cache"] == {"enable": True}
    # gRPC goes through the same cache: the answer to the same tensor is a hit there too.
    client = tritongrpc.InferenceServerClient(server.grpc)
    inp = tritongrpc.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("cached", [inp]).as_numpy("y"), x @ W * 3, rtol=1e-5)
    stats = json.loads(get(server, "/v2/models/cached/stats")[1])["model_stats"][0]["inference_stats"]
    assert stats["cache_hit"]["count"] == 3


def test_the_cache_keeps_within_its_byte_limit_and_models_without_it_are_never_cached(server):
    for seed in range(40):  # 4096 bytes hold about 170 answers of 24 bytes; 40 distinct ones fit
        post(server, "/v2/models/cached/infer", infer_body(x_batch(1, seed=100 + seed)))
    for _ in range(2):
        post(server, "/v2/models/linear/infer", infer_body(x_batch(1)))
    stats = json.loads(get(server, "/v2/models/linear/stats")[1])["model_stats"][0]["inference_stats"]
    assert stats["cache_hit"]["count"] == 0 and stats["cache_miss"]["count"] == 0


def test_response_cache_unit_lru_by_bytes():
    from ferry.serving.cache import ResponseCache, request_key

    cache = ResponseCache(max_bytes=100)
    keys = [request_key({"x": np.full((1, 4), i, np.float32)}, None) for i in range(4)]
    for i, key in enumerate(keys):
        cache.put(key, {"y": np.full(10, i, np.float32)})  # 40 bytes each: two fit
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is None
    assert cache.get(keys[3])["y"][0] == 3 and cache.bytes <= 100
    with pytest.raises(ValueError):
        cache.get(keys[3])["y"][0] = 7  # read-only: no caller can change the next one's answer
    assert request_key({"x": np.ones((1, 4), np.float32)}, ["y"]) != request_key(
        {"x": np.ones((1, 4), np.float32)}, None
    )


def test_queue_limit_and_timeout_are_set_per_model(tmp_path):
    """config.json's max_queue and timeout_ms bound one model; the other keeps the server-wide values."""
    from concurrent.futures import ThreadPoolExecutor

    from serving_helpers import slow_model

    for name in ("strict", "lenient"):
        ferry.save(slow_model(rounds=400), tmp_path / name / "1", name=name, version="1")
    (tmp_path / "strict" / "config.json").write_text(json.dumps({"max_queue": 1, "timeout_ms": 20}))
    body = infer_body(np.ones((1, 1024), np.float32))
    with running_server(tmp_path, "--max-batch-size", "1", "--max-queue", "64") as s:
        for name, allowed in (("strict", {200, 503, 504}), ("lenient", {200})):
            with ThreadPoolExecutor(12) as pool:
                paths = [f"/v2/models/{name}/infer"] * 12
                statuses = list(pool.map(lambda path: post(s, path, body)[0], paths))
            assert set(statuses) <= allowed, (name, statuses)
            if name == "strict":
                assert {503, 504} & set(statuses), statuses
