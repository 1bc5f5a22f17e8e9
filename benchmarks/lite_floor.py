"""How fast could a numpy engine be? The model's matrix products alone, run by numpy's BLAS, against ONNX
Runtime's whole run: a floor under the lite engine's latency that no kernel work in Python can go below.

    python benchmarks/lite_floor.py                 # ResNet-18-like, MobileNetV2-like, small BERT; batch 1 and 8

The lite engine runs the model once with a hook that records, for every Conv / FusedConv / MatMul / Gemm,
the matrix product it amounts to (Conv: (M, C/g*kh*kw) @ (C/g*kh*kw, N*positions) per group; depthwise
convolutions are no matrix product and count as zero). Then each product is timed alone with numpy on
contiguous random operands, 2 threads, warm. The sum is the floor.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")  # before numpy loads

import argparse  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from lite import BUILDERS, ort_session, timed  # noqa: E402

from ferry.exporters.lite import export_lite  # noqa: E402
from ferry.lite import engine as lite_engine  # noqa: E402
from ferry.lite import load  # noqa: E402


def products(flite: Path, feeds: dict) -> list[tuple[int, int, int, int]]:
    """(batches, M, K, N) of every matrix product one run of the model does."""
    found: list[tuple[int, int, int, int]] = []
    original = lite_engine.Step.__call__

    def hook(step, env, views=None):
        op = step.node.op
        args = [env.get(n) if n else None for n in step.inputs]
        if op in ("Conv", "FusedConv"):
            x, w = args[0], args[1]
            group = step.attrs.get("group", 1)
            original(step, env, views)
            y = env[step.outputs[0]]
            mg, kg = w.shape[0] // group, int(np.prod(w.shape[1:]))
            if not (mg == 1 and w.shape[1] == 1 and group > 1):  # depthwise: no matrix product
                found.append((group, mg, kg, x.shape[0] * int(np.prod(y.shape[2:]))))
            return
        if op in ("MatMul", "Gemm") and args[0].ndim >= 2 and args[1].ndim >= 2:
            a, b = args[0], args[1]
            if op == "Gemm":
                a = a.T if step.attrs.get("transA") else a
                b = b.T if step.attrs.get("transB") else b
            if b.ndim == 2:
                found.append((1, int(np.prod(a.shape[:-1])), a.shape[-1], b.shape[-1]))
            else:
                found.append((int(np.prod(a.shape[:-2])), a.shape[-2], a.shape[-1], b.shape[-1]))
        original(step, env, views)

    lite_engine.Step.__call__ = hook
    try:
        load(flite).run(feeds)
    finally:
        lite_engine.Step.__call__ = original
    return found


def floor_ms(found: list[tuple[int, int, int, int]], seconds: float) -> float:
    rng = np.random.default_rng(0)
    total = 0.0
    for batches, m, k, n in found:
        a = rng.standard_normal((batches, m, k)).astype(np.float32)
        b = rng.standard_normal((batches, k, n)).astype(np.float32)
        out = np.empty((batches, m, n), np.float32)
        total += timed(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), seconds / max(len(found), 1), 3)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("| model | batch | ONNX Runtime ms | matrix products in numpy ms | floor / ORT | lite ms | lite / floor |")
    print("|---|---|---|---|---|---|---|")
    for key in args.models.split(","):
        bm = BUILDERS[key](args.work)
        import ferry

        flite = args.work / f"{key}.flite"
        export_lite(bm.package, flite)
        session = ort_session(ferry.load(bm.package).full_model().SerializeToString())
        lite = load(flite)
        for batch in [int(b) for b in args.batches.split(",")]:
            feeds = bm.feeds(batch)
            ort_ms = timed(functools.partial(session.run, None, feeds), args.seconds)
            lite_ms = timed(functools.partial(lite.run, feeds), args.seconds)
            floor = floor_ms(products(flite, feeds), args.seconds)
            print(f"| {bm.name} | {batch} | {ort_ms:.2f} | {floor:.2f} | {floor / ort_ms:.2f}x | {lite_ms:.2f} "
                  f"| {lite_ms / floor:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
