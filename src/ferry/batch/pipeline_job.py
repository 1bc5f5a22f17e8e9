"""`ferry predict` through a multi-stage pipeline (`serving/stages.py`): each input file is one request, run
in this process with the pipeline's models loaded from its repository, several at once so that their
items batch together, and written as JSON lines (one per file, in input order) whole or not at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import InputError
from ferry.files import atomic_write
from ferry.protocol.tensors import json_nested


def is_pipeline(path: Path) -> bool:
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        return "pipeline" in json.loads(config.read_text(encoding="utf-8"))
    except ValueError:
        return False


def run_pipeline(
    folder: Path,
    files: list[Path],
    output: Path | None,
    concurrency: int = 4,
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per file: {"sample": name, output: nested list, ...}; written to `output` as JSON lines."""
    from ferry.serving.batching import BatchPolicy
    from ferry.serving.codec import InferRequest
    from ferry.serving.registry import Registry

    registry = Registry(folder.parent, BatchPolicy(max_batch_size=16, max_delay_ms=2.0))
    failures = registry.load_all()
    try:
        model = registry.get(folder.name)
        if failures:
            raise InputError("the pipeline's models did not load: " + "; ".join(failures))
        names = list(model.spec.inputs)
        if len(names) != 1 or model.spec.inputs[names[0]] != "BYTES":
            raise InputError(f"pipeline {model.name!r} takes {model.spec.inputs}; ferry predict feeds one file")

        async def all_files() -> list[dict[str, Any]]:
            gate = asyncio.Semaphore(concurrency)

            async def one(index: int, path: Path) -> dict[str, Any]:
                async with gate:
                    data = np.empty(1, dtype=object)
                    data[0] = path.read_bytes()
                    results = await model.infer(InferRequest(inputs={names[0]: data}))
                if on_done:
                    on_done(index)
                return {"sample": path.name, **{k: json_nested(v) for k, v in results.items()}}

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(files))))

        records = asyncio.run(all_files())
    finally:
        registry.close()
    if output is not None:
        with atomic_write(output, "w") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return records
