"""PP-OCR as a ferry pipeline: the processing steps between the detection, direction and recognition models
that rapidocr-onnxruntime ships (`pip install 'ferry[ocr]'`).

The pipeline (`repository()` writes it): decode and resize the image for detection (`det_input`), run the
detector, turn its probability map into boxes and crops (`boxes`, DB post-processing: threshold,
contours, box score, unclip; the fan-out), classify each crop's direction (`cls_input` -> the classifier
-> `orient`), recognise each crop (`rec_input` -> the recogniser, padded to widths of 32 so that crops
batch together), and decode the CTC outputs back per image (`read`, the gather).

opencv does the contours, rotated rectangles and perspective crops, pyclipper the polygon offset,
shapely the polygon area; what they do not do (the DB box score, the CTC decode) is written here.
Numbers follow PaddleOCR's defaults as rapidocr sets them, with the detector's longer side limited to
960 (its default, 736 on the shorter side, made a one-line image cost 1.4 s).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import InputError
from ferry.serving.functions import builtin

MAX_SIDE = 960
DB_THRESH, BOX_THRESH, UNCLIP_RATIO, MAX_CANDIDATES = 0.3, 0.5, 1.6, 1000
CLS_SHAPE, CLS_THRESH = (48, 192), 0.9
REC_HEIGHT = 48
MODELS = {"det": "ch_PP-OCRv4_det_infer.onnx", "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "rec": "ch_PP-OCRv4_rec_infer.onnx"}  # fmt: skip


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise InputError("OCR needs opencv, pyclipper and shapely: pip install 'ferry[ocr]'") from None
    return cv2


def _normalize(bgr: np.ndarray) -> np.ndarray:
    """HWC uint8 BGR -> CHW float32 in [-1, 1], as PP-OCR's models were trained."""
    return ((bgr.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


@builtin("ocr.det_input")
def det_input(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One encoded image (BYTES [1]) -> the detector's input [1, 3, H, W] (sides multiples of 32, the longer
    at most 960), the decoded image, and (h, w, resized h, resized w)."""
    cv2 = _cv2()
    raw = image.reshape(-1)
    if raw.size != 1:
        raise InputError(f"the OCR pipeline reads one image per request, got {raw.size}")
    data = raw[0] if isinstance(raw[0], bytes) else str(raw[0]).encode()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InputError("the image could not be decoded (PNG, JPEG, BMP, WebP, TIFF are read)")
    h, w = decoded.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    rh, rw = (max(32, int(round(side * scale / 32)) * 32) for side in (h, w))
    resized = cv2.resize(decoded, (rw, rh))
    return _normalize(resized)[None], decoded, np.array([h, w, rh, rw], np.int64)


@builtin("ocr.boxes")
def boxes(prob: np.ndarray, decoded: np.ndarray, shape: np.ndarray) -> tuple[list, list, list]:
    """DB post-processing: the detector's probability map -> text boxes (4 corners in image pixels, top to
    bottom then left to right), their scores, and each box's crop (BGR, upright). The fan-out."""
    cv2 = _cv2()
    pred = prob.reshape(prob.shape[-2:])
    h, w, rh, rw = (int(v) for v in shape)
    bitmap = cv2.dilate((pred > DB_THRESH).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours[:MAX_CANDIDATES]:
        points, side = _min_box(cv2, contour)
        if side < 3:
            continue
        score = _box_score(cv2, pred, points)
        if score < BOX_THRESH:
            continue
        expanded = _unclip(points)
        if expanded is None:
            continue
        points, side = _min_box(cv2, expanded.reshape(-1, 1, 2))
        if side < 5:
            continue
        points[:, 0] = np.clip(np.round(points[:, 0] * w / rw), 0, w)
        points[:, 1] = np.clip(np.round(points[:, 1] * h / rh), 0, h)
        found.append((points.astype(np.float32), score))
    found.sort(key=lambda b: (round(b[0][0, 1] / 10), b[0][0, 0]))  # rows of text, then left to right
    crops = [_crop(cv2, decoded, pts) for pts, _ in found]
    return crops, [pts for pts, _ in found], [np.float32(s) for _, s in found]


def _min_box(cv2: Any, contour: np.ndarray) -> tuple[np.ndarray, float]:
    rect = cv2.minAreaRect(contour)
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(pts[:2], key=lambda p: p[1])
    right = sorted(pts[2:], key=lambda p: p[1])
    ordered = np.array([left[0], right[0], right[1], left[1]], np.float32)  # tl, tr, br, bl
    return ordered, min(rect[1])


def _box_score(cv2: Any, pred: np.ndarray, points: np.ndarray) -> float:
    """The mean probability inside the box (PaddleOCR's 'fast' score)."""
    h, w = pred.shape
    xmin = int(np.clip(np.floor(points[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(points[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(points[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(points[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), np.uint8)
    shifted = points.copy()
    shifted[:, 0] -= xmin
    shifted[:, 1] -= ymin
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(pred[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(points: np.ndarray) -> np.ndarray | None:
    """Grow the box by area * ratio / perimeter: DB's probability map is a shrunk text region."""
    import pyclipper
    from shapely.geometry import Polygon

    polygon = Polygon(points)
    if polygon.length == 0:
        return None
    distance = polygon.area * UNCLIP_RATIO / polygon.length
    offset = pyclipper.PyclipperOffset()
    offset.AddPath([tuple(p) for p in points.tolist()], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(distance)
    return np.array(grown[0], np.float32) if len(grown) == 1 else None


def _crop(cv2: Any, image: np.ndarray, points: np.ndarray) -> np.ndarray:
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(points, target)
    crop = cv2.warpPerspective(image, matrix, (max(width, 1), max(height, 1)), borderMode=cv2.BORDER_REPLICATE,
                               flags=cv2.INTER_CUBIC)  # fmt: skip
    if crop.shape[0] / max(crop.shape[1], 1) >= 1.5:  # a vertical line of text
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _resize_to_height(cv2: Any, crop: np.ndarray, height: int, max_width: int | None) -> np.ndarray:
    h, w = crop.shape[:2]
    width = max(1, math.ceil(height * w / max(h, 1)))
    if max_width is not None:
        width = min(width, max_width)
    return cv2.resize(crop, (width, height))


@builtin("ocr.cls_input")
def cls_input(crop: np.ndarray) -> np.ndarray:
    """A crop -> the direction classifier's input [1, 3, 48, 192] (resized to height 48, padded right)."""
    cv2 = _cv2()
    resized = _normalize(_resize_to_height(cv2, crop, CLS_SHAPE[0], CLS_SHAPE[1]))
    padded = np.zeros((3, *CLS_SHAPE), np.float32)
    padded[:, :, : resized.shape[2]] = resized
    return padded[None]


@builtin("ocr.orient")
def orient(crop: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Turn the crop upright when the classifier says 180 degrees with confidence; then the recogniser's
    input [1, 3, 48, W] (height 48, width from the aspect ratio; the pipeline pads W to a multiple of 32)."""
    cv2 = _cv2()
    probs = direction.reshape(-1)
    if probs.size == 2 and probs[1] > CLS_THRESH:
        crop = np.ascontiguousarray(crop[::-1, ::-1])
    return _normalize(_resize_to_height(cv2, crop, REC_HEIGHT, None))[None]


def characters(rec_model: str | Path) -> list[str]:
    """The recogniser's alphabet from its metadata: index 0 is CTC's blank, the last one a space."""
    import onnx

    model = onnx.load(str(rec_model), load_external_data=False)
    text = next((p.value for p in model.metadata_props if p.key == "character"), None)
    if text is None:
        raise InputError(f"{rec_model}: the recognition model carries no 'character' metadata")
    return ["", *text.splitlines(), " "]


class CtcReader:
    """Each crop's recognition output decoded (`compress.metrics.ctc_decode`), with boxes and scores."""

    def __init__(self, alphabet: list[str]):
        self.alphabet = alphabet

    def __call__(self, logits: list[np.ndarray], boxes: list[np.ndarray], box_scores: list[np.float32]):
        from ferry.compress.metrics import ctc_decode

        decoded = [ctc_decode(out.reshape(1, *out.shape[-2:]), self.alphabet)[0] for out in logits]
        text = np.empty(len(decoded), dtype=object)
        text[:] = [t.encode() for t, _ in decoded]
        corners = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4, 2), np.float32)
        return text, corners, np.array([score for _, score in decoded], np.float32)


def model_paths() -> dict[str, Path]:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        raise InputError("the OCR models come from rapidocr-onnxruntime: pip install 'ferry[ocr]'")
    root = Path(spec.origin).parent / "models"
    return {kind: root / name for kind, name in MODELS.items()}


def pipeline_config(pad: int = 32) -> dict[str, Any]:
    steps = [
        {"name": "det_input", "function": "ocr.det_input", "inputs": ["image"],
         "outputs": ["det_x", "decoded", "shape"]},
        {"name": "detect", "model": "ocr_det", "inputs": {"x": "det_x"}, "outputs": {"sigmoid_0.tmp_0": "prob"}},
        {"name": "boxes", "function": "ocr.boxes", "inputs": ["prob", "decoded", "shape"],
         "outputs": ["crop", "box", "box_score"], "fan_out": True},
        {"name": "cls_input", "function": "ocr.cls_input", "inputs": ["crop"], "outputs": ["cls_x"]},
        {"name": "classify", "model": "ocr_cls", "inputs": {"x": "cls_x"},
         "outputs": {"save_infer_model/scale_0.tmp_1": "direction"}},
        {"name": "orient", "function": "ocr.orient", "inputs": ["crop", "direction"], "outputs": ["rec_x"]},
        {"name": "recognize", "model": "ocr_rec", "inputs": {"x": "rec_x"},
         "outputs": {"softmax_11.tmp_0": "logits"}, "pad": {"axis": 3, "multiple": pad}},
        {"name": "read", "function": "ocr.read", "inputs": ["logits", "box", "box_score"],
         "outputs": ["text", "boxes", "scores"], "gather": True},
    ]  # fmt: skip
    return {"pipeline": {"inputs": {"image": "BYTES"}, "outputs": ["text", "boxes", "scores"], "steps": steps}}


def repository(
    root: Path,
    max_batch: int = 16,
    backends: dict[str, str] | None = None,
    pad: int = 32,
    int8: bool = False,
    tune: bool = False,
) -> Path:
    """A model repository serving PP-OCR at `root/ocr` (with its three models beside it). `backends` picks
    the engine per stage ({"rec": "openvino"}; unset stages use the server's --backend); `pad` is the width
    multiple recognition crops are padded to; `int8` quantizes the recogniser (static int8 through
    `ferry quantize`, calibrated on rendered lines; its accuracy is in docs/benchmarks.md). Dynamic int8
    read 2% of the characters: its activations' ranges, taken per call, do not suit this recogniser.
    `tune` measures each stage on every installed engine with inputs of its real sizes (`ferry bench
    --tune --dim ...`), so that backend `auto` runs each stage on its fastest engine."""
    import ferry

    paths = model_paths()
    warm = {
        "det": {"height": 96, "width": 320},
        "cls": {"x_dim2": 48, "x_dim3": 192},
        "rec": {"height": 48, "width": 320},
    }
    for kind, path in paths.items():
        target = root / f"ocr_{kind}" / "1"
        if not (target / "ferry.json").is_file():
            # Axis 0 of input and output is the batch (so that crops merge); the image axes get names.
            sig = ferry.load(path).signature
            dims = {f"{sig.inputs[0].name}:0": "batch", f"{sig.outputs[0].name}:0": "batch"}
            dims |= {f"{sig.inputs[0].name}:2": "height", f"{sig.inputs[0].name}:3": "width"} if kind != "cls" else {}
            ferry.convert(path, target, name=f"ocr_{kind}", check=False, overwrite=True, dim_names=dims)
            if kind == "rec" and int8:
                from ferry.compress.quantize import quantize

                calib = root / "rec_calibration.npz"
                np.savez(calib, x=calibration_crops())
                quantize(target, target, calib, mode="static", fmt="qdq", backend="onnxruntime", overwrite=True)
        config = {"max_batch_size": 1 if kind == "det" else max_batch, "batch_delay_ms": 2,
                  "warmup": {"batch_sizes": [1], "dims": warm[kind]}}  # fmt: skip
        if backends and kind in backends:
            config["backend"] = backends[kind]
        if tune and not (target.parent / ".tuned").is_file():
            _tune(target, kind)
        (root / f"ocr_{kind}" / "config.json").write_text(json.dumps(config))
    (root / "ocr").mkdir(parents=True, exist_ok=True)
    (root / "ocr" / "config.json").write_text(json.dumps(pipeline_config(pad), indent=1))
    return root


# What each stage's inputs look like in use: a page for the detector, crops for the others.
TUNE_SHAPES = {"det": ([1], {"height": 640, "width": 640}), "cls": ([1, 8], {"x_dim2": 48, "x_dim3": 192}),
               "rec": ([1, 8], {"height": 48, "width": 320})}  # fmt: skip


def _tune(package: Path, kind: str) -> None:
    """`ferry bench --tune` for one stage, at the sizes it meets: the record backend `auto` reads."""
    import ferry
    from ferry.bench import measure_each, tuning_record
    from ferry.inference.backends import installed_backends

    pkg = ferry.load(package)
    batches, dims = TUNE_SHAPES[kind]
    results, _ = measure_each(pkg, installed_backends(), batches, [2], "fp32", 2, 5, 0.3, dims)
    pkg.save_tuning({**pkg.manifest.tuning, "fp32": tuning_record(results, "fp32", package=pkg)})
    (package.parent / ".tuned").write_text("")  # beside the version folder: not a file of the package


def calibration_crops(count: int = 96, width: int = 320) -> np.ndarray:
    """Recogniser inputs [count, 3, 48, width] of lines rendered with Pillow's bundled font: calibration data
    for int8, made here (no data set is downloaded)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    words = "ferry model serve batch engine pixel tensor graph stream queue cargo river light paper 2026 314".split()
    out = np.zeros((count, 3, REC_HEIGHT, width), np.float32)
    for i in range(count):
        size = int(rng.integers(24, 44))
        font = ImageFont.load_default(size=size)
        line = " ".join(words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(1, 4))))
        image = Image.new("RGB", (int(font.getlength(line)) + 10, int(size * 1.3)), "white")
        ImageDraw.Draw(image).text((5, 2), line, fill="black", font=font)
        x = orient(np.asarray(image)[:, :, ::-1].copy(), np.array([1.0, 0.0], np.float32))
        out[i, :, :, : min(width, x.shape[3])] = x[0, :, :, :width]
    return out


def demo_repository() -> Path:
    """The OCR repository for `ferry serve --demo ocr`, made once in the user's cache folder."""
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferry" / "ocr-demo"
    cache.mkdir(parents=True, exist_ok=True)
    return repository(cache, tune=True)


_reader: CtcReader | None = None


@builtin("ocr.read")
def read(logits: list[np.ndarray], box: list[np.ndarray], box_score: list[np.float32]):
    """The gather: each crop's CTC output decoded to text (BYTES [n]), with the boxes [n, 4, 2] and the
    recognition scores [n], in reading order."""
    global _reader
    if _reader is None:
        _reader = CtcReader(characters(model_paths()["rec"]))
    return _reader(logits, box, box_score)
