"""Structured channel pruning of the digits CNN: speed-up and accuracy cost at several ratios, with and
without the least-squares refit. Latency at batch 512 (the model is tiny: at batch 1 the call overhead is
all there is), ONNX Runtime, 2 threads, median.

    python benchmarks/pruning.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ferry
from ferry.compress.data import Dataset
from ferry.compress.prune import prune
from ferry.compress.report import latency_ms


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ferry-prune-"))
    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    x_train, x_test, _, y_test = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    calib = Dataset({"image": x_train[:512]}, None, 512)
    evals = Dataset({"image": x_test}, list(y_test), len(x_test))
    pkg = Path(ferry.__file__).parent / "demo" / "digits"
    feeds = {"image": np.tile(x_test, (2, 1, 1, 1))[:512]}
    print("| ratio | refit | top-1 before | top-1 after | drop (points) | ms before | ms after | speed-up | size |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ratio in (0.25, 0.5, 0.75):
        for refit in (False, True):
            out = work / f"p{ratio}{refit}"
            r = prune(pkg, out, "structured", ratio, eval_data=evals, calib_data=calib if refit else None, batch=512)
            before = min(latency_ms(pkg, "onnxruntime", feeds, seconds=2) for _ in range(3))
            after = min(latency_ms(out, "onnxruntime", feeds, seconds=2) for _ in range(3))
            drop = 100 * (r.accuracy_before - r.accuracy_after)
            print(f"| {ratio} | {'yes' if refit else 'no'} | {r.accuracy_before:.4f} | {r.accuracy_after:.4f} | "
                  f"{drop:.2f} | {before:.2f} | {after:.2f} | {before / after:.2f}x | "
                  f"{r.size_after / r.size_before:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
