"""Everything else: resizing, detection post-processing, signal windows, losses, strings, ai.onnx.ml."""

from __future__ import annotations

import math
import re

import numpy as np

from ..registry import op
from .elementwise import np_dtype
from .reduce import _log_softmax

# --- Resize: one (out x in) weight matrix per resized axis, applied with tensordot ------------------------


def _source(x, in_len, out_len, scale, mode, roi_start, roi_end):
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        center = in_len / 2
        return center * (1 - adjustment) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_start * (in_len - 1) + x * (roi_end - roi_start) * (in_len - 1) / (out_len - 1)
        return np.full_like(x, 0.5 * (roi_start + roi_end) * (in_len - 1))
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _cubic(t, a):
    t = np.abs(t)
    return np.where(
        t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1, np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0)
    )


def _weights(in_len, out_len, scale, p):
    x = _source(np.arange(out_len, dtype=np.float64), in_len, out_len, scale, p["ctm"], p["roi_start"], p["roi_end"])
    w = np.zeros((out_len, in_len))
    outside = np.zeros(out_len, bool)
    if p["ctm"] == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_len - 1)
    mode = p["mode"]
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda v: np.ceil(v - 0.5),
            "round_prefer_ceil": lambda v: np.floor(v + 0.5),
            "floor": np.floor,
            "ceil": np.ceil,
        }[p["nearest_mode"]]
        idx = np.clip(rounding(x).astype(np.int64), 0, in_len - 1)
        w[np.arange(out_len), idx] = 1
    else:
        antialias = p["antialias"] and scale < 1
        support_scale = scale if antialias else 1.0
        kernel = (lambda t: np.maximum(0, 1 - np.abs(t))) if mode == "linear" else (lambda t: _cubic(t, p["a"]))
        reach = (1 if mode == "linear" else 2) / support_scale
        for o in range(out_len):
            lo, hi = int(math.floor(x[o] - reach)) + 1, int(math.floor(x[o] + reach))
            taps = np.arange(lo, hi + 1)
            k = kernel((x[o] - taps) * support_scale)
            if p["exclude_outside"] or antialias:
                inside = (taps >= 0) & (taps < in_len)
                taps, k = taps[inside], k[inside]
                k = k / k.sum() if k.sum() else k
            elif antialias:
                k = k / k.sum()
            np.add.at(w[o], np.clip(taps, 0, in_len - 1), k)
    return w, outside


def _resize(x, scales, sizes, roi, p, axes):
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]
    if sizes is not None and len(sizes):
        sizes = [int(s) for s in sizes]
        if p["keep_aspect_ratio_policy"] != "stretch":
            pick = min if p["keep_aspect_ratio_policy"] == "not_larger" else max
            s = pick(sz / x.shape[a] for sz, a in zip(sizes, axes))
            scales = [s] * len(axes)
            sizes = [int(math.floor(s * x.shape[a] + 0.5)) for a in axes]
        else:
            scales = [sz / x.shape[a] for sz, a in zip(sizes, axes)]
    else:
        scales = [float(s) for s in scales]
        if len(scales) == rank and len(axes) != rank:
            scales = [scales[a] for a in axes]
        sizes = [int(math.floor(x.shape[a] * s)) for a, s in zip(axes, scales)]
    roi = None if roi is None or len(roi) == 0 else np.asarray(roi, np.float64)
    y = x.astype(np.float64)
    for i, (axis, scale, out_len) in enumerate(zip(axes, scales, sizes)):
        if roi is not None:
            n = len(roi) // 2
            j = i if n == len(axes) else axis
            p["roi_start"], p["roi_end"] = roi[j], roi[j + n]
        else:
            p["roi_start"], p["roi_end"] = 0.0, 1.0
        in_len = y.shape[axis]
        if out_len == in_len and scale == 1 and p["ctm"] != "tf_crop_and_resize":
            continue
        w, outside = _weights(in_len, out_len, scale, p)
        y = np.moveaxis(np.tensordot(w, np.moveaxis(y, axis, 0), axes=(1, 0)), 0, axis)
        if outside.any():
            index = [slice(None)] * rank
            index[axis] = outside
            y[tuple(index)] = p["extrapolation_value"]
    if x.dtype.kind in "iu":
        y = np.clip(np.rint(y), np.iinfo(x.dtype).min, np.iinfo(x.dtype).max)
    return y.astype(x.dtype)


def _params(mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside, extrapolation_value,
            antialias=0, keep_aspect_ratio_policy="stretch"):  # fmt: skip
    return {
        "mode": mode, "ctm": coordinate_transformation_mode, "nearest_mode": nearest_mode, "a": cubic_coeff_a,
        "exclude_outside": exclude_outside, "extrapolation_value": extrapolation_value, "antialias": antialias,
        "keep_aspect_ratio_policy": keep_aspect_ratio_policy,
    }  # fmt: skip


@op("Resize", since=10)
def Resize_10(x, scales, *, mode="nearest"):
    return _resize(x, scales, None, None, _params(mode, "asymmetric", "floor", -0.75, 0, 0.0), None)


@op("Resize", since=11)
def Resize(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None, coordinate_transformation_mode="half_pixel",
           cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, keep_aspect_ratio_policy="stretch",
           mode="nearest", nearest_mode="round_prefer_floor"):  # fmt: skip
    p = _params(mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside,
                extrapolation_value, antialias, keep_aspect_ratio_policy)  # fmt: skip
    return _resize(x, scales, sizes, roi, p, axes)


@op("Upsample", since=9)
def Upsample(x, scales, *, mode="nearest"):
    return Resize_10(x, scales, mode=mode)


@op("Upsample", since=7)
def Upsample_7(x, *, scales, mode="nearest"):
    return Resize_10(x, np.array(scales), mode=mode)


# --- detection ----------------------------------------------------------------------------------------------


@op("NonMaxSuppression")
def NonMaxSuppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None, *,
                      center_point_box=0):  # fmt: skip
    limit = 0 if max_output_boxes_per_class is None else int(np.asarray(max_output_boxes_per_class).reshape(-1)[0])
    iou_t = 0.0 if iou_threshold is None else float(np.asarray(iou_threshold).reshape(-1)[0])
    score_t = None if score_threshold is None else float(np.asarray(score_threshold).reshape(-1)[0])
    selected = []
    for b in range(scores.shape[0]):
        box = boxes[b].astype(np.float64)
        if center_point_box:
            cx, cy, w, h = box.T
            y1, x1, y2, x2 = cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2
        else:
            y1, x1, y2, x2 = box.T
            y1, y2 = np.minimum(y1, y2), np.maximum(y1, y2)
            x1, x2 = np.minimum(x1, x2), np.maximum(x1, x2)
        area = (y2 - y1) * (x2 - x1)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            order = [i for i in np.argsort(-s, kind="stable") if score_t is None or s[i] > score_t]
            keep: list[int] = []
            for i in order:
                if len(keep) >= limit:
                    break
                ok = True
                for j in keep:
                    ih = max(0.0, min(y2[i], y2[j]) - max(y1[i], y1[j]))
                    iw = max(0.0, min(x2[i], x2[j]) - max(x1[i], x1[j]))
                    inter = ih * iw
                    union = area[i] + area[j] - inter
                    if union > 0 and inter / union > iou_t:
                        ok = False
                        break
                if ok:
                    keep.append(i)
            selected += [[b, c, i] for i in keep]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


# --- signal windows -----------------------------------------------------------------------------------------


def _window(size, periodic, output_datatype, terms):
    n = int(np.asarray(size).reshape(-1)[0])
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    w = sum(c * np.cos(2 * np.pi * i * k / denom) for i, c in enumerate(terms))
    return w.astype(np_dtype(output_datatype))


@op("HannWindow", since=17)
def HannWindow(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, [0.5, -0.5])


@op("HammingWindow", since=17)
def HammingWindow(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, [25 / 46, -21 / 46])


@op("BlackmanWindow", since=17)
def BlackmanWindow(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, [0.42, -0.5, 0.08])


# --- losses -------------------------------------------------------------------------------------------------


def _nll(logp, target, weight, ignore_index, reduction):
    target = target.astype(np.int64)
    n, c = logp.shape[:2]
    mask = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    safe = np.where(mask, target, 0)
    picked = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    w = np.ones(target.shape, logp.dtype) if weight is None else weight[safe]
    w = np.where(mask, w, 0).astype(logp.dtype)
    loss = picked * w
    if reduction == "none":
        return loss.astype(logp.dtype)
    if reduction == "sum":
        return np.array(loss.sum(), logp.dtype)
    return np.array(loss.sum() / w.sum(), logp.dtype)


@op("NegativeLogLikelihoodLoss", since=13)
def NegativeLogLikelihoodLoss(x, target, weight=None, *, ignore_index=None, reduction="mean"):
    return _nll(x, target, weight, ignore_index, reduction)


@op("SoftmaxCrossEntropyLoss", since=13)
def SoftmaxCrossEntropyLoss(scores, labels, weights=None, *, ignore_index=None, reduction="mean"):
    logp = _log_softmax(scores, axis=1).astype(scores.dtype)
    return _nll(logp, labels, weights, ignore_index, reduction), logp


# --- strings ------------------------------------------------------------------------------------------------


@op("StringConcat", since=20)
def StringConcat(a, b):
    return np.asarray(np.char.add(a.astype(str), b.astype(str)), dtype=object)


@op("RegexFullMatch", since=20)
def RegexFullMatch(x, *, pattern):
    rx = re.compile(pattern)
    return np.vectorize(lambda s: rx.fullmatch(s) is not None, otypes=[bool])(x)


@op("StringNormalizer")
def StringNormalizer(x, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None):
    words = list(x.reshape(-1))
    stop = set(stopwords or [])
    if is_case_sensitive:
        kept = [w for w in words if w not in stop]
    else:
        low = {s.lower() for s in stop}
        kept = [w for w in words if w.lower() not in low]
    if case_change_action == "LOWER":
        kept = [w.lower() for w in kept]
    elif case_change_action == "UPPER":
        kept = [w.upper() for w in kept]
    if not kept:
        kept = [""]
    out = np.array(kept, dtype=object)
    return out.reshape(1, -1) if x.ndim == 2 else out


@op("StringSplit", since=20)
def StringSplit(x, *, delimiter=None, maxsplit=None):
    parts = [
        (s.split(delimiter or None, -1 if maxsplit is None else maxsplit) if delimiter != "" else s.split())
        for s in x.reshape(-1)
    ]
    width = max((len(p) for p in parts), default=0)
    out = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        out[i, : len(p)] = p
    return out.reshape(*x.shape, width), np.array([len(p) for p in parts], np.int64).reshape(x.shape)


# --- ai.onnx.ml ---------------------------------------------------------------------------------------------


@op("Binarizer", domain="ai.onnx.ml")
def Binarizer(x, *, threshold=0.0):
    return (x > threshold).astype(x.dtype)


@op("ArrayFeatureExtractor", domain="ai.onnx.ml")
def ArrayFeatureExtractor(x, indices):
    return np.take(x, indices.reshape(-1).astype(np.int64), axis=-1)
