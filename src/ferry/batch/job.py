"""A resumable batch prediction job.

Each finished batch is saved under `OUT.partial/`; a rerun with the same model, the same input data and
the same batch size skips those batches. The resume key hashes the data as it was read (not only the
file names), so changed inputs start over, with a note saying so. The final file is written through
`ferry.files.atomic_write`, so `OUT` is either absent, the previous one, or complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferry.batch.readers import Samples
from ferry.errors import BackendError, InputError
from ferry.files import atomic_write
from ferry.inference import Predictor
from ferry.processing import postprocess, preprocess_images

FORMATS = ("npz", "jsonl")


@dataclass
class BatchJob:
    predictor: Predictor
    samples: Samples
    batch_size: int = 32
    output: Path | None = None
    fmt: str | None = None  # from the output's suffix when None
    resume: bool = True
    notes: list[str] = field(default_factory=list)  # what the job decided that a user should hear

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.fmt is None and self.output is not None:
            self.fmt = self.output.suffix.lstrip(".").lower() or "npz"
        if self.fmt is not None and self.fmt not in FORMATS:
            raise InputError(f"output format must be one of {FORMATS}, got {self.fmt!r}")

    @property
    def batches(self) -> int:
        return -(-self.samples.count // self.batch_size)

    def batch_inputs(self, index: int) -> dict[str, np.ndarray]:
        lo, hi = index * self.batch_size, min((index + 1) * self.batch_size, self.samples.count)
        package = self.predictor.config.package
        if self.samples.image_paths is not None:
            batch = preprocess_images(self.samples.image_paths[lo:hi], package.manifest.preprocessing)
            return {package.signature.inputs[0].name: batch}
        return {n: np.ascontiguousarray(a[lo:hi]) for n, a in self.samples.arrays.items()}

    def fingerprint(self) -> str:
        """The resume key: the model's files, the batch size, the sample names and the data itself (the
        arrays as read, or the image files' bytes). blake2b hashes about 1 GB/s here."""
        package = self.predictor.config.package
        h = hashlib.blake2b(digest_size=32)
        h.update(json.dumps({k: v.sha256 for k, v in package.manifest.files.items()}, sort_keys=True).encode())
        h.update(json.dumps([self.samples.count, self.batch_size, self.samples.names]).encode())
        for name, array in sorted(self.samples.arrays.items()):
            h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
        for path in self.samples.image_paths or []:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


# Runs the batches with these indices and yields (index, outputs) as each finishes, in any order.
Compute = Callable[[list[int]], Iterable[tuple[int, dict[str, np.ndarray]]]]


def run_job(
    job: BatchJob, on_batch: Callable[[int], None] | None = None, compute: Compute | None = None
) -> list[dict[str, np.ndarray]]:
    """Run every batch (skipping those a previous run finished); returns the results in order. `compute`
    runs the batches left to do somewhere else (`ferry.integrations.ray` on a Ray cluster); by default
    they run here, one after another. Each is saved for a resume as it arrives."""
    partial = _partial_dir(job)
    done: dict[int, dict[str, np.ndarray]] = {}
    pending = []
    for index in range(job.batches):
        saved = partial / f"batch-{index:06d}.npz" if partial else None
        if saved is not None and saved.is_file():
            with np.load(saved, allow_pickle=False) as data:
                done[index] = {k: data[k] for k in data.files}
            if on_batch:
                on_batch(index)
        else:
            pending.append(index)
    stream = compute(pending) if compute else ((i, job.predictor.predict(job.batch_inputs(i))) for i in pending)
    for index, out in stream:
        if partial is not None:
            _save_npz_atomic(partial / f"batch-{index:06d}.npz", out)
        done[index] = out
        if on_batch:
            on_batch(index)
    missing = [i for i in range(job.batches) if i not in done]
    if missing:
        raise BackendError(f"batches {missing[:10]} never came back from where they ran")
    results = [done[i] for i in range(job.batches)]
    if job.output is not None:
        _write_output(job, results)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
    return results


def _partial_dir(job: BatchJob) -> Path | None:
    if job.output is None:
        return None
    partial = job.output.with_name(job.output.name + ".partial")
    meta = partial / "job.json"
    fingerprint = job.fingerprint()
    if partial.is_dir():
        same = meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == fingerprint
        done = len(list(partial.glob("batch-*.npz")))
        if same and job.resume:
            if done:
                job.notes.append(f"resuming: {done} of {job.batches} batches were done by an earlier run")
        else:
            if done:
                why = "--no-resume" if same else "the model, the input data or the batch size changed"
                job.notes.append(f"starting over ({why}): the {done} batches of an earlier run were dropped")
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    with atomic_write(meta, "w") as f:
        f.write(json.dumps({"fingerprint": fingerprint, "batches": job.batches}))
    return partial


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _write_output(job: BatchJob, results: list[dict[str, np.ndarray]]) -> None:
    assert job.output is not None
    if job.fmt == "npz":
        merged = {k: np.concatenate([r[k] for r in results]) for k in results[0]} if results else {}
        _save_npz_atomic(job.output, merged)
        return
    with atomic_write(job.output, "w") as f:
        for record in jsonl_records(job, results):
            f.write(json.dumps(record) + "\n")


def jsonl_records(job: BatchJob, results: list[dict[str, np.ndarray]]) -> Iterator[dict[str, Any]]:
    """One record per sample: its name, each output as a list, and top-k labels if the package says so."""
    manifest = job.predictor.config.package.manifest
    first_output = manifest.signature.outputs[0].name
    index = 0
    for batch in results:
        top = None
        if manifest.postprocessing:
            top = postprocess(batch[first_output], manifest.postprocessing, manifest.labels)
        n = len(next(iter(batch.values())))
        for i in range(n):
            record: dict[str, Any] = {"sample": job.samples.names[index]}
            record["outputs"] = {k: v[i].tolist() for k, v in batch.items()}
            if isinstance(top, list):
                record["top"] = top[i]
            yield record
            index += 1
