"""int8 on the device engines: ncnn's and MNN's fp32 exports against their int8 ones, as `ferry export lite
--target ncnn|mnn --int8 --calib DATA` writes them.

    python benchmarks/device_int8.py                                  # 3 models, batch 1
    python benchmarks/device_int8.py --models resnet18 --rounds 3

Each export runs in its own process (devices.py's worker, the engine's own Python API on the written
files alone), 2 threads, interleaved rounds; a cell is the median over rounds of each round's median.
Calibration: 32 made-up samples (the models' weights are random or, for PP-OCR, real but fed noise), so
the accuracy columns say how far int8 lands from the package on ONNX Runtime, not a task's accuracy: the
export's cosine similarity on the calibration samples, and top-1 agreement on 16 other samples (the
export's --eval with --metric agreement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import devices  # noqa: E402

import ferry  # noqa: E402
from ferry.compress.data import Dataset  # noqa: E402
from ferry.exporters.targets import export_target  # noqa: E402

BUILDERS = {k: devices.BUILDERS[k] for k in ("resnet18", "mobilenet_v2", "ppocr_rec")}  # the CNNs: BERT has no ncnn
EXPORTS = ["ncnn-fp32", "ncnn-int8", "mnn-fp32", "mnn-int8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per export and round")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in args.models.split(","):
        bm = BUILDERS[key](args.work)
        calib, held = bm.feeds(32), bm.feeds(16)
        shapes = {n: [1, *a.shape[1:]] for n, a in calib.items()}
        folders, accuracy = {}, {}
        for export in EXPORTS:
            engine, precision = export.split("-")
            folders[export] = args.work / f"{key}-{export}"
            data = Dataset(calib, None, 32) if precision == "int8" else None
            result = export_target(bm.package, folders[export], engine, int8=data is not None, calib=data,
                                   eval_data=Dataset(held, None, 16), metric="agreement",
                                   shapes=shapes if engine == "ncnn" else None)  # fmt: skip
            # top-1 agreement flattens the first output: for a classifier only (PP-OCR rec's is per time step)
            classifier = len(ferry.load(bm.package).signature.outputs[0].shape) <= 2
            accuracy[export] = (result.cosine, result.accuracy.export if classifier else None)
        feeds_file = args.work / f"{key}-int8-b1.npz"
        np.savez(feeds_file, **bm.feeds(1))
        workers = {e: devices.Worker(f"raw-{e.split('-')[0]}", folders[e], feeds_file) for e in EXPORTS}
        times: dict[str, list[float]] = {e: [] for e in EXPORTS}
        for _ in range(args.rounds):
            for export, worker in workers.items():
                if worker.error is None:
                    times[export].append(worker.time(args.seconds))
        for worker in workers.values():
            worker.close()
        row = {"model": bm.name, "ms": {e: statistics.median(t) for e, t in times.items() if t},
               "errors": {e: w.error for e, w in workers.items() if w.error},
               "bytes": {e: sum(f.stat().st_size for f in folders[e].iterdir() if f.name != "engine.json")
                         for e in EXPORTS},
               "accuracy": accuracy}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| model | engine | fp32 ms | int8 ms | int8/fp32 | fp32 bytes | int8 bytes | int8 cosine | top-1 agrees |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for engine in ("ncnn", "mnn"):
            fp32, int8 = r["ms"].get(f"{engine}-fp32"), r["ms"].get(f"{engine}-int8")
            similarity, agree = r["accuracy"][f"{engine}-int8"]
            ratio = f"{int8 / fp32:.2f}" if fp32 and int8 else "-"
            sizes = f"{r['bytes'][f'{engine}-fp32']:,} | {r['bytes'][f'{engine}-int8']:,}"
            agrees = "-" if agree is None else f"{agree:.2f}"
            print(f"| {r['model']} | {engine} | {fp32 or 0:.2f} | {int8 or 0:.2f} | {ratio} | {sizes} | "
                  f"{similarity:.4f} | {agrees} |")  # fmt: skip
        for export, error in r["errors"].items():
            print(f"- {r['model']} {export}: {error}")


if __name__ == "__main__":
    main()
