"""PP-OCR served as a ferry pipeline against rapidocr-onnxruntime, on text rendered here (ground truth known by
construction; no downloads).

    python benchmarks/ocr.py --images 200

The evaluation set: images of 1-10 lines of words and numbers, in DejaVu Sans, Serif and Mono (Debian's
fonts-dejavu) and Pillow's bundled font, at 22-44 px, with light noise and a slight rotation. Both
engines see the same images with the detector's longer side limited to 960 and 2 ONNX Runtime threads.

Reported: character accuracy (1 - edit distance / length per ground-truth line, matched to the best
predicted line, spaces ignored), line recall (lines read at 0.8 or better), per-image p50 with one client
(interleaved: rapidocr in this process, ferry over HTTP), and images/s with 8 concurrent clients (ferry
over HTTP; rapidocr from 8 threads of one process, one engine per thread).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serving import start, stop, wait_ready  # noqa: E402

from ferry.compress.metrics import line_accuracy  # noqa: E402

WORDS = ("ferry model serve batch engine pixel tensor graph stream queue cargo harbor river north south "
         "light quick brown paper metal stone green orange silver window garden market").split()  # fmt: skip
FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", None]  # None: Pillow's bundled font


def make_image(rng: np.random.Generator) -> tuple[bytes, list[str]]:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = int(rng.integers(22, 45))
    name = FONTS[int(rng.integers(len(FONTS)))]
    font = (
        ImageFont.load_default(size=size)
        if name is None
        else ImageFont.truetype(f"/usr/share/fonts/truetype/dejavu/{name}", size)
    )
    lines = []
    for _ in range(int(rng.integers(1, 11))):
        words = [str(int(rng.integers(0, 10000))) if rng.random() < 0.2 else WORDS[int(rng.integers(len(WORDS)))]
                 for _ in range(int(rng.integers(1, 5)))]  # fmt: skip
        lines.append(" ".join(words))
    width = 60 + max(int(font.getlength(line)) for line in lines)
    height = 40 + len(lines) * int(size * 1.8)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 20 + i * int(size * 1.8)), line, fill=0, font=font)
    image = image.rotate(float(rng.uniform(-1.5, 1.5)), fillcolor=255, expand=True)
    pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (image.height, image.width))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue(), lines


def score(predicted: list[str], truth: list[str]) -> list[float]:
    """Each ground-truth line's accuracy against the best predicted line (a predicted line may serve
    one truth line only; a line split in two boxes is also tried joined)."""
    candidates = list(predicted) + [a + " " + b for a, b in zip(predicted, predicted[1:])]
    return [max((line_accuracy(c, t) for c in candidates), default=0.0) for t in truth]


def ferry_call(url: str, image: bytes) -> list[str]:
    body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"content_type": "base64"},
                                   "data": [base64.b64encode(image).decode()]}]}).encode()  # fmt: skip
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        doc = json.loads(r.read())
    return next(o["data"] for o in doc["outputs"] if o["name"] == "text")


def rapid_engine():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(det_limit_side_len=960, det_limit_type="max", intra_op_num_threads=2)


def rapid_call(engine, image: bytes) -> list[str]:
    result, _ = engine(image)
    return [r[1] for r in result or []]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", default="", help="engine per stage for ferry, e.g. det=openvino,rec=openvino")
    parser.add_argument("--int8", action="store_true", help="ferry's recogniser quantized to int8 (static)")
    parser.add_argument("--tune", action="store_true", help="each stage on the engine `ferry bench --tune` picks")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    data = [make_image(rng) for _ in range(args.images)]
    print(f"{len(data)} images, {sum(len(t) for _, t in data)} lines", flush=True)

    from ferry.ocr import repository

    backends = dict(item.split("=") for item in args.backends.split(",") if item)
    repo = repository(Path(tempfile.mkdtemp(prefix="ferry-ocr-bench-")), backends=backends, int8=args.int8,
                      tune=args.tune)  # fmt: skip
    print(f"ferry's engines per stage: {backends or ('tuned' if args.tune else 'the server default')}; "
          f"int8 recognition: {args.int8}", flush=True)  # fmt: skip
    port = 18700
    server = start([sys.executable, "-m", "ferry", "serve", str(repo), "--http-port", str(port), "--grpc-port", "0",
                    "--threads", "2"])  # fmt: skip
    url = f"http://127.0.0.1:{port}/v2/models/ocr/infer"
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120)
        engine = rapid_engine()
        rapid_call(engine, data[0][0])
        ferry_call(url, data[0][0])
        results = {"ferry": ([], []), "rapidocr": ([], [])}  # accuracies, latencies
        for image, truth in data:  # one client, interleaved
            for name, call in (
                ("rapidocr", lambda im: rapid_call(engine, im)),
                ("ferry", lambda im: ferry_call(url, im)),
            ):
                started = time.perf_counter()
                lines = call(image)
                results[name][1].append((time.perf_counter() - started) * 1000)
                results[name][0].extend(score(lines, truth))
        throughput = {}
        n = min(len(data), 96)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda d: ferry_call(url, d[0]), data[:n]))
        throughput["ferry"] = n / (time.perf_counter() - started)
        local = threading.local()

        def rapid_threaded(item):
            if not hasattr(local, "engine"):
                local.engine = rapid_engine()
            return rapid_call(local.engine, item[0])

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(rapid_threaded, data[: args.concurrency]))  # each thread builds its engine first
            started = time.perf_counter()
            list(pool.map(rapid_threaded, data[:n]))
        throughput["rapidocr"] = n / (time.perf_counter() - started)
    finally:
        stop(server)

    print("\n| engine | char accuracy | line recall (>= 0.8) | p50 ms per image | p90 ms | images/s at c8 |")
    print("|---|---|---|---|---|---|")
    for name in ("rapidocr", "ferry"):
        acc, lat = results[name]
        recall = sum(a >= 0.8 for a in acc) / len(acc)
        p90 = float(np.percentile(lat, 90))
        print(f"| {name} | {statistics.mean(acc):.4f} | {recall:.3f} | {statistics.median(lat):.1f} | {p90:.1f} | "
              f"{throughput[name]:.2f} |")  # fmt: skip
    ratio = statistics.median(results["ferry"][1]) / statistics.median(results["rapidocr"][1])
    print(
        f"\nferry p50 / rapidocr p50: {ratio:.2f}x; served images/s vs rapidocr from "
        f"{args.concurrency} threads: {throughput['ferry'] / throughput['rapidocr']:.2f}x"
    )


if __name__ == "__main__":
    main()
