"""Device engines side by side: ncnn and MNN called raw, ferry's predictor on each of them, ONNX Runtime raw
and through ferry, ferry's numpy engine, and `auto` after `ferry bench --tune`.

    python benchmarks/devices.py                          # 4 models, batch 1 and 8
    python benchmarks/devices.py --models resnet18 --batches 1 --rounds 2

Each engine runs in its own process (a worker that loads once, then times on request), 2 threads, fp32
(ncnn's fp16 storage off). The parent asks every worker in turn, round after round, so drift on this VM
hits every engine alike; a cell is the median over rounds of each round's median. Raw ncnn and MNN run the
files ferry converted (the same .param/.bin and .mnn), through their own Python APIs: ncnn one sample at a
time (it has no batch axis), MNN's Module API on the whole batch.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import models as bench_models  # noqa: E402

import ferry  # noqa: E402

BUILDERS = {
    "resnet18": lambda r: bench_models.cnn(r, "resnet18"),
    "mobilenet_v2": lambda r: bench_models.cnn(r, "mobilenet_v2"),
    "bert": bench_models.small_bert,
    "ppocr_rec": bench_models.ppocr_rec,
}
ENGINES = ["raw-onnxruntime", "raw-ncnn", "raw-mnn", "ferry-onnxruntime", "ferry-ncnn", "ferry-mnn", "ferry-lite",
           "ferry-auto"]  # fmt: skip
PAIRS = ["pair-ncnn", "pair-mnn", "pair-onnxruntime", "pair-auto"]  # call for call in one process: ferry / raw,
# and auto / the engine its tuning chose

# The worker: load ENGINE for PACKAGE, then for each line "SECONDS" on stdin time the feeds in FEEDS.npz for
# that long and print the median ms (or the error, once, at load). ENGINE "pair-NAME" loads NAME both raw
# and through ferry in the one process and times them call for call (raw, ferry, ferry, raw, ...): it
# prints the median of the pairs' ferry/raw ratios, which the machine's drift cannot move between the two.
WORKER = r"""
import json, statistics, sys, time
import numpy as np
engine, package, feeds_file = sys.argv[1:4]
feeds = dict(np.load(feeds_file))
threads = 2

import ferry

def build(kind, name, spinning=True):
    from pathlib import Path
    if (Path(package) / "engine.json").is_file():  # a `ferry export lite` folder: the engine's files alone
        record, folder = json.loads((Path(package) / "engine.json").read_text()), Path(package)
    else:
        pkg = ferry.load(package)
        names = pkg.signature.output_names
        record, folder = pkg.manifest.engines.get(name), pkg.root / "engines" / name
    if kind == "ferry":
        config = ferry.Config(package)
        config.set_backend(name)
        config.set_cpu_threads(threads)
        config.set_spinning(spinning)
        predictor = ferry.create_predictor(config)
        return lambda: predictor.predict(feeds)
    if name == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(pkg.model_path), so, providers=["CPUExecutionProvider"])
        return lambda: session.run(names, feeds)
    if name == "ncnn":
        import ncnn
        if record is None:
            raise RuntimeError("ferry could not convert the model for ncnn (see ferry-ncnn)")
        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.load_param(str(folder / record["files"][0])); net.load_model(str(folder / record["files"][1]))
        ins = [(record["inputs"][k], v) for k, v in feeds.items()]
        outs = list(record["outputs"].values())
        def run():
            for i in range(len(ins[0][1])):
                ex = net.create_extractor()
                for n, v in ins:
                    ex.input(n, ncnn.Mat(np.ascontiguousarray(v[i])))
                for n in outs:
                    np.array(ex.extract(n)[1])
        return run
    import MNN.expr as F, MNN.nn as nn
    if record is None:
        raise RuntimeError("ferry could not convert the model for MNN (see ferry-mnn)")
    rt = nn.create_runtime_manager(({"backend": "CPU", "numThread": threads, "precision": "high"},))
    module = nn.load_module_from_file(str(folder / record["files"][0]),
                                      list(record["inputs"].values()), list(record["outputs"].values()),
                                      runtime_manager=rt)
    def run():
        args = [F.const(np.ascontiguousarray(feeds[k]), list(feeds[k].shape), F.NCHW) for k in record["inputs"]]
        for o in module.forward(args):
            np.array(o.read())
    return run

def timed(run):
    t = time.perf_counter(); run(); return (time.perf_counter() - t) * 1000

try:
    kind, _, name = engine.partition("-")
    if engine == "pair-auto":  # auto against the engine its tuning chose for this batch size
        tuned = ferry.load(package).manifest.tuning["fp32"]["fastest"]
        runs = [build("ferry", tuned[str(len(next(iter(feeds.values()))))], False), build("ferry", "auto", False)]
    else:
        # two ORT sessions in one process: each one's spinning threads would slow the other's calls
        runs = [build("raw", name, False), build("ferry", name, False)] if kind == "pair" else [build(kind, name)]
    for run in runs:
        run()
    print("ready", flush=True)
except Exception as exc:
    print("error " + json.dumps(f"{type(exc).__name__}: {exc}"[:300]), flush=True)
    sys.exit(0)
for line in sys.stdin:
    seconds = float(line)
    times, deadline = [], time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        if len(runs) == 1:
            times.append(timed(runs[0]))
        else:  # raw, ferry, ferry, raw: each pair's order alternates
            raw1, ferry1, ferry2, raw2 = timed(runs[0]), timed(runs[1]), timed(runs[1]), timed(runs[0])
            times += [ferry1 / raw1, ferry2 / raw2]
    print(statistics.median(times), flush=True)
"""


class Worker:
    def __init__(self, engine: str, package: Path, feeds_file: Path):
        self.engine = engine
        command = [sys.executable, "-c", WORKER, engine, str(package), str(feeds_file)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        line = self._line()
        self.error = json.loads(line[6:]) if line.startswith("error ") else None
        if not line.startswith(("ready", "error")):
            self.error = f"worker said {line!r}"

    def _line(self) -> str:
        while True:  # engines print banners on stdout (MNN: "The device supports: ...")
            line = self.proc.stdout.readline()
            if not line or line.startswith(("ready", "error")) or _number(line):
                return line.strip() or "exited"

    def time(self, seconds: float) -> float:
        # The engine timed before may still spin its worker threads (OpenMP's block time, ORT's spinning):
        # let them sleep first, as benchmarks/core.py does.
        time.sleep(0.2)
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _number(line: str) -> bool:
    try:
        float(line)
    except ValueError:
        return False
    return True


def prepare(package: Path, batches: list[int], example: dict[str, np.ndarray]) -> dict[str, str]:
    """Convert for ncnn and MNN once (recorded in the package) and tune `auto`, at the sizes the timed
    inputs have (ncnn converts at the shapes it first sees); {engine: why it cannot}."""
    from ferry.bench import measure_each, tuning_record
    from ferry.inference.backends import installed_backends

    pkg = ferry.load(package)
    dims = {d: example[s.name].shape[i] for s in pkg.signature.inputs for i, d in enumerate(s.shape)
            if isinstance(d, str) and i > 0}  # fmt: skip
    results, skipped = measure_each(pkg, installed_backends(), batches, [2], "fp32", 3, 10, 1.0, dims)
    pkg.save_tuning({**pkg.manifest.tuning, "fp32": tuning_record(results, "fp32", package=pkg)})
    print(f"tuned {pkg.name}: {pkg.manifest.tuning['fp32']['fastest']}", flush=True)
    return skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per engine, setting and round")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in args.models.split(","):
        bm = BUILDERS[key](args.work)
        skipped = prepare(bm.package, batches, bm.feeds(1))
        for batch in batches:
            feeds_file = args.work / f"{key}-devices-b{batch}.npz"
            np.savez(feeds_file, **bm.feeds(batch))
            workers = [Worker(e, bm.package, feeds_file) for e in ENGINES + PAIRS]
            times: dict[str, list[float]] = {w.engine: [] for w in workers}
            for _ in range(args.rounds):
                for w in workers:
                    if w.error is None:
                        times[w.engine].append(w.time(args.seconds))
            for w in workers:
                w.close()
            row = {"model": bm.name, "batch": batch,
                   "ms": {e: statistics.median(t) for e, t in times.items() if t and e in ENGINES},
                   "paired": {e: statistics.median(t) for e, t in times.items() if t and e in PAIRS},
                   "errors": {w.engine: w.error for w in workers if w.error}, "skipped_by_tune": skipped}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print_tables(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def print_tables(rows: list[dict]) -> None:
    print()
    print("| model | batch | " + " | ".join(ENGINES) + " |")
    print("|---|---|" + "---|" * len(ENGINES))
    for r in rows:
        cells = [f"{r['ms'][e]:.2f}" if e in r["ms"] else "fails" for e in ENGINES]
        print(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    print()
    print("| model | batch | ferry/raw ncnn | ferry/raw MNN | ferry/raw ORT | auto / fastest single engine |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ms = r["ms"]
        ratio = functools.partial(_ratio, ms)
        singles = [ms[e] for e in ("ferry-onnxruntime", "ferry-ncnn", "ferry-mnn") if e in ms]
        auto = f"{ms['ferry-auto'] / min(singles):.3f}" if "ferry-auto" in ms and singles else "-"
        print(f"| {r['model']} | {r['batch']} | {ratio('ferry-ncnn', 'raw-ncnn')} | {ratio('ferry-mnn', 'raw-mnn')} | "
              f"{ratio('ferry-onnxruntime', 'raw-onnxruntime')} | {auto} |")  # fmt: skip
    print()
    print("| model | batch | ferry/raw ncnn | ferry/raw MNN | ferry/raw ORT | auto / its engine | (all paired) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r['paired'][p]:.3f}" if p in r["paired"] else "-" for p in PAIRS]
        print(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " | |")
    for r in rows:
        for engine, error in r["errors"].items():
            print(f"- {r['model']} b{r['batch']} {engine}: {error}")


def _ratio(ms: dict[str, float], a: str, b: str) -> str:
    return f"{ms[a] / ms[b]:.3f}" if a in ms and b in ms else "-"


if __name__ == "__main__":
    main()
