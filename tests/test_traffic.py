"""A/B splits, sticky routing and shadow traffic: the pure chooser, and a real server."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

import ferry
from ferry.errors import ConfigError
from ferry.serving.traffic import choose, parse, resolve
from serving_helpers import W, get, infer_body, linear_model, post, running_server


def test_choose_follows_weights():
    rng = np.random.default_rng(0)
    counts = {"1": 0, "2": 0, "3": 0}
    for _ in range(20000):
        counts[choose({"1": 70, "2": 20, "3": 10}, None, rng.random())] += 1
    assert abs(counts["1"] / 20000 - 0.7) < 0.02
    assert abs(counts["2"] / 20000 - 0.2) < 0.02
    assert abs(counts["3"] / 20000 - 0.1) < 0.02


def test_sticky_keys_always_get_the_same_variant_and_spread():
    picks = {f"user-{i}": choose({"a": 50, "b": 50}, f"user-{i}", 0.0) for i in range(2000)}
    assert all(choose({"a": 50, "b": 50}, k, 0.99) == v for k, v in list(picks.items())[:50])
    share = sum(v == "a" for v in picks.values()) / len(picks)
    assert 0.45 < share < 0.55


def test_parse_and_resolve():
    assert resolve("2", "m") == ("m", "2")
    assert resolve("other", "m") == ("other", None)
    assert resolve("other/3", "m") == ("other", "3")
    assert parse({"split": {"1": 1}, "sticky_header": "X-User"}, "t").sticky_header == "x-user"
    with pytest.raises(ConfigError, match="non-negative weights"):
        parse({"split": {"1": -1}}, "t")
    with pytest.raises(ConfigError, match="unknown traffic key"):
        parse({"splitt": {}}, "t")


@pytest.fixture(scope="module")
def ab_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ab")
    ferry.save(linear_model(1.0), repo / "linear" / "1", name="linear", version="1")
    ferry.save(linear_model(2.0), repo / "linear" / "2", name="linear", version="2")
    config = {"version_policy": {"all": True}, "traffic": {"split": {"1": 80, "2": 20}, "sticky_header": "x-user"}}
    (repo / "linear" / "config.json").write_text(json.dumps(config))
    with running_server(repo, "--api-key", "k") as s:
        yield s


AUTH = {"X-API-Key": "k"}


def test_split_sends_traffic_by_weight_and_says_which_answered(ab_server):
    x = np.ones((1, 4), np.float32)
    counts = {"1": 0, "2": 0}
    for _ in range(300):
        status, headers, body = post(ab_server, "/v2/models/linear/infer", infer_body(x), AUTH)
        assert status == 200
        variant = headers["x-ferry-variant"]
        counts[variant] += 1
        y = np.array(json.loads(body)["outputs"][0]["data"])
        np.testing.assert_allclose(y, (x @ W * float(variant)).ravel(), rtol=1e-5)  # the named variant answered
    assert 240 - 40 < counts["1"] < 240 + 40
    metrics = get(ab_server, "/metrics", AUTH)[1].decode()
    got = re.search(r'ferry_variant_requests_total\{model="linear",variant="2"\} (\S+)', metrics)
    assert got and float(got.group(1)) == counts["2"]


def test_sticky_header_pins_a_user_to_one_variant(ab_server):
    x = np.ones((1, 4), np.float32)
    for user in ("alice", "bob", "carol"):
        headers = {**AUTH, "x-user": user}
        seen = {
            post(ab_server, "/v2/models/linear/infer", infer_body(x), headers)[1]["x-ferry-variant"] for _ in range(10)
        }
        assert len(seen) == 1


def test_explicit_version_bypasses_the_split(ab_server):
    _, headers, _ = post(ab_server, "/v2/models/linear/versions/2/infer", infer_body(np.ones((1, 4), np.float32)), AUTH)
    assert "x-ferry-variant" not in headers and headers["x-ferry-model-version"] == "2"


def test_admin_endpoint_changes_the_split_and_shadow_counts_differences(ab_server):
    x = np.ones((1, 4), np.float32)
    assert post(ab_server, "/v2/models/linear/traffic", b'{"split": {"2": 1}}')[0] == 401  # needs the key
    status, _, body = post(ab_server, "/v2/models/linear/traffic", b'{"split": {"9": 1}}', AUTH)
    assert status == 404 and "no version '9'" in json.loads(body)["error"]
    status, _, body = post(ab_server, "/v2/models/linear/traffic", b'{"split": {"1": 1}, "shadow": "2"}', AUTH)
    assert status == 200 and json.loads(body)["shadow"] == "2"
    for _ in range(20):
        _, headers, body = post(ab_server, "/v2/models/linear/infer", infer_body(x), AUTH)
        assert headers["x-ferry-variant"] == "1"  # the shadow never answers
        np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], (x @ W).ravel(), rtol=1e-5)
    deadline = time.monotonic() + 10
    different = 0.0
    while time.monotonic() < deadline:
        metrics = get(ab_server, "/metrics", AUTH)[1].decode()
        found = re.search(
            r'ferry_shadow_comparisons_total\{model="linear",outcome="different",variant="2"\} (\S+)', metrics
        )
        different = float(found.group(1)) if found else 0.0
        if different >= 20:
            break
        time.sleep(0.05)
    assert different == 20  # version 2 doubles the answer: every shadow run differs
    assert json.loads(get(ab_server, "/v2/models/linear/traffic", AUTH)[1])["split"] == {"1": 1.0}
