"""Image preprocessing steps: decode, resize, crop, invert, scale, normalize, layout.

Steps run in order on one image; `decode` turns bytes or a path into a PIL image, `to_array` (implied
before the first array step) turns it into float32 HWC, and `layout` finishes as CHW or HWC.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ferry.errors import InputError


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("image preprocessing needs Pillow: pip install 'ferry[image]'") from None
    return Image


MAX_PIXELS = 50_000_000  # a 48 MP phone photo fits; 12000x12000 (144 MP) once cost 690 MB and 5 s of CPU


def decode(image: Any, mode: str = "RGB", max_pixels: int | None = MAX_PIXELS) -> Any:
    """An encoded image (bytes, file) as a PIL image in `mode`. Its size is read from the header and checked
    against `max_pixels` before any pixel is decoded."""
    Image = _pil()
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = io.BytesIO(bytes(image))
    try:
        img = Image.open(image) if not isinstance(image, Image.Image) else image
    except Exception as exc:
        raise InputError(f"could not decode image: {exc}") from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:.1f} MP"
        )
    try:
        return img.convert(mode)
    except Exception as exc:
        raise InputError(f"could not decode image: {exc}") from None


def resize(image: Any, size: Sequence[int], resample: str = "bilinear") -> Any:
    """size is [width, height]; an int resizes the shorter side to it, keeping the aspect ratio."""
    Image = _pil()
    method = getattr(Image.Resampling, resample.upper())
    if isinstance(size, int):
        w, h = image.size
        scale = size / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
    w, h = int(size[0]), int(size[1])
    if method == Image.Resampling.NEAREST:
        return image.resize((w, h), method)
    # Width first, then height, as two calls: Pillow 13 chooses the order of its two passes itself (each
    # pass rounds to 8 bits, so the order moves some pixels by 1), and ferry.js must give the same pixels.
    if image.width != w:
        image = image.resize((w, image.height), method)
    return image.resize((w, h), method) if image.height != h else image


def center_crop(image: Any, size: Sequence[int]) -> Any:
    w, h = image.size
    cw, ch = int(size[0]), int(size[1])
    left, top = max(0, (w - cw) // 2), max(0, (h - ch) // 2)
    return image.crop((left, top, left + cw, top + ch))


def to_array(image: Any) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    return arr[:, :, None] if arr.ndim == 2 else arr


def invert(arr: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    return max_value - arr


def scale(arr: np.ndarray, factor: float = 1 / 255.0) -> np.ndarray:
    return arr * np.float32(factor)


def normalize(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    return (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def layout(arr: np.ndarray, to: str = "CHW") -> np.ndarray:
    if to == "CHW":
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    if to == "HWC":
        return arr
    raise InputError(f"layout must be CHW or HWC, got {to!r}")


_IMAGE_OPS: dict[str, Callable[..., Any]] = {"decode": decode, "resize": resize, "center_crop": center_crop}
_ARRAY_OPS: dict[str, Callable[..., Any]] = {"invert": invert, "scale": scale, "normalize": normalize, "layout": layout}
PREPROCESS_OPS = frozenset(_IMAGE_OPS) | frozenset(_ARRAY_OPS)


def step_function(op: str) -> Callable[..., Any]:
    """The function behind a preprocessing op (the manifest check binds a step's arguments to it)."""
    return _IMAGE_OPS.get(op) or _ARRAY_OPS[op]


def preprocess_image(image: Any, steps: list[dict[str, Any]], max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Run `steps` on one image (path, bytes or PIL image) and return a float32 array. Images larger than
    `max_pixels` are refused before they are decoded."""
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            image = f.read()
    value: Any = image
    is_array = False
    for step in steps:
        args = {k: v for k, v in step.items() if k != "op"}
        op = step["op"]
        if op in _IMAGE_OPS:
            if is_array:
                raise InputError(f"preprocessing step {op!r} works on images and must come before array steps")
            if op == "decode":
                args["max_pixels"] = max_pixels
            value = _IMAGE_OPS[op](value, **args)
        elif op in _ARRAY_OPS:
            if not is_array:
                value, is_array = to_array(value), True
            value = _ARRAY_OPS[op](value, **args)
        else:
            raise InputError(f"unknown preprocessing step {op!r}; known: {sorted(PREPROCESS_OPS)}")
    if not is_array:
        value = to_array(value)
    return value.astype(np.float32, copy=False)


def preprocess_images(
    images: Sequence[Any], steps: list[dict[str, Any]], max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """A batch: every image through `steps`, stacked on a new axis 0."""
    return np.stack([preprocess_image(img, steps, max_pixels) for img in images])
