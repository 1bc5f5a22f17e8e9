"""ferry's web page against a hand-written page that calls onnxruntime-web directly, in Debian's headless
chromium, on the same model, runtime files and settings; plus what a visitor's loads cost.

    python benchmarks/web.py                      # ResNet-18-like and MobileNetV2-like, batch 1
    python benchmarks/web.py --models mobilenet_v2 --rounds 3 --runs 20

Latency: ferry's `model.predict` (preprocessing excluded) and the raw page's `session.run`, each timed in
the page over `--runs` runs after 3 warm-up runs; rounds alternate ferry and raw, each round a new page;
medians of the per-round medians. Both pages are served with the isolation headers and ask for 2 threads.
Native ONNX Runtime runs in its own process, for scale. Visits: a fresh browser profile on a server that
sends no headers (the service worker isolates the page), time from navigation to the first prediction,
then a second visit counted in network responses, and an int8 site (`ferry quantize`) against fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import models as bench_models  # noqa: E402

from ferry.compress.quantize import quantize  # noqa: E402
from ferry.web import export_web  # noqa: E402
from ferry.web.preview import SiteServer  # noqa: E402
from web_helpers import launch  # noqa: E402

RAW_PAGE = """<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><body><script type="module">
import * as ort from "./ort/ort.wasm.min.mjs";
const threads = Number(new URLSearchParams(location.search).get("threads") ?? 2);
ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
ort.env.wasm.numThreads = threads;
const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all"};
const session = await ort.InferenceSession.create("model.onnx", options);
window.runTimed = async (shape, runs) => {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
  const feeds = {[session.inputNames[0]]: new ort.Tensor("float32", data, shape)};
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
  }
  return times;
};
document.body.dataset.ready = "1";
</script>"""

NATIVE = """
import sys, time, statistics, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[2]); so.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.sin(np.arange(3 * 224 * 224, dtype=np.float32)).reshape(1, 3, 224, 224)
feeds = {s.get_inputs()[0].name: x}
for _ in range(3): s.run(None, feeds)
t = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); s.run(None, feeds); t.append((time.perf_counter() - t0) * 1e3)
print(statistics.median(t))
"""

# ferry's predict and a raw session of the same runtime module (so the same threads and settings) in one
# page, run by run in turn: what is left between them is ferry's own cost.
INTERLEAVED = """async ([shape, runs]) => {
  const m = window.ferryModel;
  const ort = await import("./ort/ort.wasm.min.mjs");
  const session = await ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"],
                                                                     graphOptimizationLevel: "all"});
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
  const raw = {[session.inputNames[0]]: new ort.Tensor("float32", data, shape)};
  const feeds = {[m.inputs[0].name]: {data, shape}};
  for (let i = 0; i < 3; i++) { await m.predict(feeds); await session.run(raw); }
  const f = [], r = [];
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    await m.predict(feeds);
    f.push(performance.now() - t);
    t = performance.now();
    await session.run(raw);
    r.push(performance.now() - t);
  }
  await session.release();
  return [f, r];
}"""

SHAPE = [1, 3, 224, 224]


def page_times(context, url: str, script: str, runs: int) -> list[float]:
    """Per-run medians of what `script` times in a fresh page (one list per timed thing)."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", state="attached", timeout=120_000)
    times = page.evaluate(script, [SHAPE, runs])
    page.close()
    return [statistics.median(t) for t in (times if isinstance(times[0], list) else [times])]


def latency(pw, site: Path, tmp: Path, rounds: int, runs: int) -> dict[str, float]:
    (site / "raw.html").write_text(RAW_PAGE)
    server = SiteServer(site, port=0, isolation=True).start()
    context = launch(pw, tmp / f"profile-{site.name}")
    out: dict[str, list[float]] = {"ferry": [], "raw": [], "raw page": [], "raw 1 thread": []}
    raw_page = "async ([shape, runs]) => runTimed(shape, runs)"
    try:
        for _ in range(rounds):
            f, r = page_times(context, server.url, INTERLEAVED, runs)
            out["ferry"].append(f)
            out["raw"].append(r)
            out["raw page"] += page_times(context, server.url + "raw.html?threads=2", raw_page, runs)
            out["raw 1 thread"] += page_times(context, server.url + "raw.html?threads=1", raw_page, runs)
    finally:
        context.close()
        server.shutdown()
        server.server_close()
    return {k: statistics.median(v) for k, v in out.items()}


def native(model: Path, threads: int, runs: int) -> float:
    result = subprocess.run([sys.executable, "-c", NATIVE, str(model), str(threads), str(runs)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return float(result.stdout.strip())


FIRST_PREDICTION = """async ([shape]) => {
  const m = window.ferryModel;
  const t = performance.now();
  await m.predict({[m.inputs[0].name]: {data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape}});
  // as if the page had predicted the moment the model was loaded (the harness's polling does not count):
  // epoch ms by the page's clock, and when the tab's first document started navigating (before a reload)
  const end = performance.timeOrigin + m.loadStartedAt + m.loadMs + (performance.now() - t);
  return [end, Number(sessionStorage.getItem("bench-t0"))];
}"""
# runs in every document before its scripts; sessionStorage outlives the service worker's one reload
FIRST_ORIGIN = "sessionStorage.setItem('bench-t0', sessionStorage.getItem('bench-t0') ?? performance.timeOrigin)"


def visits(pw, site: Path, tmp: Path, isolation: bool) -> dict[str, float]:
    """A fresh profile: the first visit to the first prediction (measured by the page's clock from the moment
    the navigation was asked for, so the harness's polling does not count), then a second visit."""
    server = SiteServer(site, port=0, isolation=isolation).start()
    context = launch(pw, tmp / f"visit-{site.name}-{isolation}")
    context.add_init_script(FIRST_ORIGIN)
    try:
        page = context.new_page()
        t0 = time.time() * 1e3
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=120_000)
        end, navigation_start = page.evaluate(FIRST_PREDICTION, [SHAPE])
        first_s, first_goto_s = (end - navigation_start) / 1e3, (end - t0) / 1e3
        threads = page.evaluate("window.ferryModel.threads")
        page.close()
        second = context.new_page()
        network: list[bool] = []
        second.on("response", lambda r: network.append(not r.from_service_worker))
        t0 = time.time() * 1e3
        second.goto(server.url)
        second.wait_for_selector("body[data-ready='1']", state="attached", timeout=120_000)
        end, navigation_start = second.evaluate(FIRST_PREDICTION, [SHAPE])
        second_s = (end - navigation_start) / 1e3
    finally:
        context.close()
        server.shutdown()
        server.server_close()
    return {"first_s": first_s, "first_goto_s": first_goto_s, "threads": threads, "second_s": second_s,
            "second_network_responses": sum(network), "second_responses": len(network)}  # fmt: skip


def top1(pw, site: Path, tmp: Path, inputs: np.ndarray) -> list[int]:
    server = SiteServer(site, port=0).start()
    context = launch(pw, tmp / f"top1-{site.name}")
    try:
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']", state="attached", timeout=120_000)
        return page.evaluate(
            """async (xs) => { const m = window.ferryModel; const out = [];
              for (const x of xs) { const r = await m.predict({data: Float32Array.from(x), shape: [1, 3, 224, 224]});
                const d = r[m.outputs[0].name].data; out.push(d.indexOf(Math.max(...d))); }
              return out; }""",
            [x.ravel().tolist() for x in inputs],
        )
    finally:
        context.close()
        server.shutdown()
        server.server_close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top1-samples", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d, sync_playwright() as pw:
        tmp = Path(d)
        for kind in args.models:
            bm = bench_models.cnn(tmp, kind)
            exported = export_web(bm.package, tmp / f"{kind}-site")
            site = exported.path
            rng = np.random.default_rng(0)
            calib = tmp / f"{kind}-calib.npz"
            np.savez(calib, x=rng.standard_normal((16, 3, 224, 224)).astype(np.float32))
            q = quantize(bm.package, tmp / f"{kind}-int8", calib, backend="onnxruntime", fmt="qdq").package
            q_site = export_web(q, tmp / f"{kind}-int8-site").path
            row = latency(pw, site, tmp, args.rounds, args.runs)
            row["int8"] = latency(pw, q_site, tmp, args.rounds, args.runs)["ferry"]
            row["rounds"] = args.rounds
            row["native 1"] = native(site / "model.onnx", 1, args.runs)
            row["native 2"] = native(site / "model.onnx", 2, args.runs)
            row["visits"] = {f"headers {h}": visits(pw, site, tmp, h) for h in (True, False)}
            samples = rng.standard_normal((args.top1_samples, 3, 224, 224)).astype(np.float32)
            a, b = top1(pw, site, tmp, samples), top1(pw, q_site, tmp, samples)
            row["int8_top1_agreement"] = sum(x == y for x, y in zip(a, b)) / len(a)
            row["int8_model_ratio"] = (q_site / "model.onnx").stat().st_size / (site / "model.onnx").stat().st_size
            row["first_visit_gzip_mb"] = exported.transfer / 1e6
            results[bm.name] = row
            print(f"\n{bm.name}")
            print(f"  ferry predict {row['ferry']:.1f} ms | raw onnxruntime-web {row['raw']:.1f} ms | "
                  f"ratio {row['ferry'] / row['raw']:.3f}")  # fmt: skip
            print(f"  raw page alone (2 threads) {row['raw page']:.1f} ms | raw 1 thread {row['raw 1 thread']:.1f} ms")
            print(f"  native ORT 1 thread {row['native 1']:.1f} ms, "
                  f"2 threads {row['native 2']:.1f} ms")  # fmt: skip
            print(f"  int8 site {row['int8']:.1f} ms, model {row['int8_model_ratio']:.2f}x the fp32 bytes, "
                  f"top-1 agreement {row['int8_top1_agreement']:.0%} on {len(a)} random inputs")  # fmt: skip
            print(f"  a first visit transfers {row['first_visit_gzip_mb']:.1f} MB gzip (the export's count)")
            for host, v in row["visits"].items():
                print(f"  {'host sends the headers' if host == 'headers True' else 'host sends no headers'}: "
                      f"first visit {v['first_s']:.2f} s from navigation start to the first prediction "
                      f"({v['first_goto_s']:.2f} s from the harness's goto), {v['threads']} threads; "
                      f"second visit {v['second_s']:.2f} s, "
                      f"{v['second_network_responses']} of {v['second_responses']} responses "
                      "from the network")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
