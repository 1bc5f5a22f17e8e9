"""The batcher on its own: several model instances run batches at the same time."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from ferry.serving.batching import Batcher, BatchPolicy
from ferry.serving.repository import discover
from serving_helpers import make_repository


@pytest.mark.parametrize("instances, expect_overlap", [(1, False), (2, True)])
def test_instances_run_batches_at_the_same_time(instances, expect_overlap):
    meet = threading.Barrier(2, timeout=1.0)
    overlapped = []

    def run(inputs, outputs):
        try:
            meet.wait()  # passes only when a second batch is running alongside this one
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
        return {"y": inputs["x"] * 2}

    batcher = Batcher(run, BatchPolicy(max_batch_size=1, instances=instances), True, "m")

    async def two_requests():
        x = np.ones((1, 3), np.float32)
        return await asyncio.gather(batcher.submit({"x": x}, ["y"]), batcher.submit({"x": x + 1}, ["y"]))

    try:
        first, second = asyncio.run(two_requests())
    finally:
        batcher.close()
    np.testing.assert_array_equal(first["y"], np.full((1, 3), 2, np.float32))
    np.testing.assert_array_equal(second["y"], np.full((1, 3), 4, np.float32))
    assert any(overlapped) is expect_overlap, overlapped


def test_instances_come_from_the_model_config(tmp_path):
    root = make_repository(tmp_path)
    (root / "linear" / "config.json").write_text(json.dumps({"instances": 3}))
    specs = {s.name: s for s in discover(root, BatchPolicy())}
    assert specs["linear"].policy.instances == 3
